"""Explain the shipped example photos with the shipped SqueezeNet v1.1, from Python (offline).

    python examples/quickstart.py [OUTPUT_FOLDER]

Prints the top-3 classes of each photo and writes, per photo, the heatmap over the photo as a PNG into
OUTPUT_FOLDER (default: ./quickstart_output).
"""

import sys
from pathlib import Path

import lrp_cli

project = Path(__file__).resolve().parent.parent
out = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart_output")
out.mkdir(parents=True, exist_ok=True)

model = lrp_cli.load(project / "configs" / "config_sequential.txt")
photos = sorted((project / "someimages").glob("*.jpg"))
for result in model.explain(photos):  # one batch through the net; a list in, a list out
    best = ", ".join(f"{name.split(' ', 1)[1]} {p:.2f}" for _, name, p in result.top5[:3])
    print(f"{Path(result.source).name}: {best}")
    result.to_pil(overlay=True).save(out / f"{Path(result.source).stem}_overlay.png")

# Settings of the config can be changed per call, e.g. the ε-rule everywhere:
epsilon = model.explain(photos[0], formula=0, epsilon=1e-6)
print(f"{photos[0].name} with formula 0: heatmap {epsilon.heatmap().shape}, relevance sum {epsilon.rawhm.sum():.3g}")
