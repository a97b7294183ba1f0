"""A run killed with SIGKILL midway and resumed with --skip-existing ends with the outputs of an uninterrupted run
and nothing else in the output folder (no temporary file either), and no file ever appears under its final name
before it is complete."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from PIL import Image
from test_batch import PYTHON_CLI, configure

COUNT = 50
PHOTOS = sorted(p for p in (ROOT / "someimages").iterdir() if p.suffix == ".jpg")


def check_complete(path: Path) -> None:
    """A final-named output file is whole: PNGs decode, the raw heatmap has 2 + 3·H lines, the top-10 ten."""
    name = path.name
    if name.endswith(".png"):
        with Image.open(path) as image:
            image.load()
            assert image.size == (227, 227), name
    elif name.endswith("_rawhm.txt"):
        text = path.read_text()
        lines = text.split("\n")
        h, w = (int(v) for v in lines[1].split())
        assert text.endswith("\n") and len(lines) == 2 + 3 * h + 1 and lines[0] == "3", name
        assert all(len(line.split()) == w for line in lines[2:-1]), name
    elif name.endswith("_toptenscores.txt"):
        assert len(path.read_text().splitlines()) == 10, name
    else:
        raise AssertionError(f"unexpected output {name}")


def final_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else {}


def test_killed_run_resumes_to_the_uninterrupted_outputs(tmp_path):
    """Killed while running alone; resumed and compared with 2 worker processes (the same arithmetic per image)."""
    images = tmp_path / "someimages"
    images.mkdir()
    for n in range(COUNT):
        (images / f"img{n:02d}.jpg").symlink_to(PHOTOS[n % len(PHOTOS)])
    (tmp_path / "list.txt").write_text("".join(f"someimages/img{n:02d}.jpg -1\n" for n in range(COUNT)))
    models = ROOT / "configs"

    def run_args(name):
        config = configure(models / "config_sequential.txt", tmp_path / f"{name}.txt", models,
                           standalone_outpath=tmp_path / name)
        return [*PYTHON_CLI, str(config), str(tmp_path / "list.txt"), str(tmp_path)], tmp_path / name / "someimages"

    args, out = run_args("killed")
    process = subprocess.Popen(args + ["--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checked: set[str] = set()
    try:
        while process.poll() is None:
            for name, path in final_files(out).items():
                if name not in checked:
                    check_complete(path)  # the moment it appears under its final name
                    checked.add(name)
            if sum(name.endswith("_as_inputted_into_the_dnn.png") for name in checked) >= 10:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read().decode()
    finally:
        process.kill()
    done_before = {name[: -len("_as_inputted_into_the_dnn.png")] for name in final_files(out)
                   if name.endswith("_as_inputted_into_the_dnn.png")}
    assert 10 <= len(done_before) < COUNT
    for path in final_files(out).values():
        check_complete(path)

    resumed = subprocess.run(args + ["--skip-existing", "--json", "--jobs", "2"], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert [Path(r["input"]).name for r in records] == [f"img{n:02d}.jpg" for n in range(COUNT)]
    assert {Path(r["input"]).name for r in records if r["skipped"]} == done_before
    assert f"{COUNT - len(done_before)} done, 0 failed, {len(done_before)} skipped" in resumed.stderr

    whole_args, whole = run_args("whole")
    subprocess.run(whole_args + ["--quiet", "--jobs", "2"], check=True, timeout=300)
    expected = final_files(whole)
    got = final_files(out)
    assert sorted(got) == sorted(expected) and len(expected) == 4 * COUNT
    assert [name for name in expected if got[name].read_bytes() != expected[name].read_bytes()] == []
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # nothing else: no temporary file left


_KILL_BEFORE_RENAMING = """
import os, signal, sys
import lrp_cli.outputs as outputs
real_commit, commits = outputs._commit, []

def commit(staged):  # the second entry: all of its temporary files complete, none renamed yet
    commits.append(staged)
    if len(commits) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real_commit(staged)

outputs._commit = commit
from lrp_cli.cli import lrp_demo
lrp_demo(prog_name="lrp-demo")
"""


def test_temporaries_of_a_killed_rewrite_go_when_the_resumed_run_skips_the_entry(tmp_path):
    """A rerun over complete outputs (without --skip-existing) is killed while it rewrites the second entry: that
    entry's complete earlier outputs and the killed writer's temporary files lie side by side. The --skip-existing
    rerun skips every entry (all outputs exist) and still removes those temporary files."""
    names = [p.name for p in PHOTOS[:3]]
    images = tmp_path / "someimages"
    images.mkdir()
    for name in names:
        shutil.copy(ROOT / "someimages" / name, images / name)
    (tmp_path / "list.txt").write_text("".join(f"someimages/{name} -1\n" for name in names))
    config = configure(ROOT / "configs" / "config_sequential.txt", tmp_path / "config.txt", ROOT / "configs",
                       standalone_outpath=tmp_path / "out")
    args = [str(config), str(tmp_path / "list.txt"), str(tmp_path), "--batch-size", "1", "--quiet"]
    out = tmp_path / "out" / "someimages"
    subprocess.run([*PYTHON_CLI, *args], check=True, timeout=120)
    complete = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(complete) == 4 * len(names)

    killed = subprocess.run([sys.executable, "-c", _KILL_BEFORE_RENAMING, *args], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert len(left) == 4 and all(name.startswith(f".{names[1]}_") and name.endswith(".tmp") for name in left)

    resumed = subprocess.run([*PYTHON_CLI, *args, "--skip-existing"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 done, 0 failed, 3 skipped (outputs exist)" in resumed.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == complete
