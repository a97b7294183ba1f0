#!/usr/bin/env python3
"""Draw the README's image strip: photo / heatmap / overlay of the shipped examples, with the shipped config.

Runs ``lrp-demo configs/config_sequential.txt testfilelist.txt <repo> --report`` in a temporary folder (so the strip
shows exactly what the README's first command writes, plus the report's overlay) and tiles the
``_as_inputted_into_the_dnn.png``, ``_heatmap.png`` and ``_overlay.png`` of every listed image into one PNG with
a 256-colour palette (small enough to commit).

    python scripts/make_readme_strip.py [--out docs/readme_strip.png] [--tile 120]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
ROWS = (("photo", "_as_inputted_into_the_dnn.png"), ("heatmap", "_heatmap.png"), ("overlay", "_overlay.png"))


def run_demo(folder: Path) -> Path:
    """Run the README's demo (with --report for the overlays) in ``folder``; the folder of its outputs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "lrp_cli", str(ROOT / "configs/config_sequential.txt"),
               str(ROOT / "testfilelist.txt"), str(ROOT), "--report", "--quiet"]
    subprocess.run(command, cwd=folder, env=env, check=True)
    return folder / "lrp_output" / "someimages"


def draw_strip(outputs: Path, names: list[str], tile: int) -> Image.Image:
    """Rows photo / heatmap / overlay, one column per image, labels on the left."""
    label_width, gap = 70, 4
    width = label_width + len(names) * (tile + gap)
    height = len(ROWS) * (tile + gap)
    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for row, (label, suffix) in enumerate(ROWS):
        top = row * (tile + gap)
        draw.text((label_width - 8, top + tile // 2), label, fill="black", font=font, anchor="rm")
        for column, name in enumerate(names):
            with Image.open(outputs / f"{name}{suffix}") as image:
                picture = image.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS)
            strip.paste(picture, (label_width + column * (tile + gap), top))
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "readme_strip.png"))
    parser.add_argument("--tile", type=int, default=120, help="side of each picture in pixels")
    args = parser.parse_args()
    names = [Path(line.split()[0]).name for line in (ROOT / "testfilelist.txt").read_text().splitlines() if line]
    with tempfile.TemporaryDirectory() as folder:
        strip = draw_strip(run_demo(Path(folder)), names, args.tile)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    strip.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, format="PNG", optimize=True)
    print(f"{args.out}: {strip.width}×{strip.height}, {Path(args.out).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
