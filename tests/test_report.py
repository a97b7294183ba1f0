"""report.html: parsed back, every linked image exists, rows = images done, hostile names escaped, pages linked,
valid after every row (a killed run leaves a valid page), and the CLI's --report on the shipped demo."""

import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from conftest import ROOT, SHARED
from PIL import Image

from lrp_cli.config import load_config
from lrp_cli.render import normalized
from lrp_cli.report import Report, ReportRow, page_name, read_top5

HOSTILE = [
    'a<b>"quote"&amp;.jpg',
    "100% #1?x=y.jpg",
    "space name's.jpg",
    "ünïcødé 写真.jpg",
    "back\\slash.jpg",
    "undecodable-\udcff.jpg",  # a non-UTF-8 byte of a file name, as Python holds it (surrogate escape)
    "plain.jpg",
]


class Page(HTMLParser):
    """Rows (class and text), links (href, src) and whether the document closed properly."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.rows, self.links, self.tags, self.stack = [], [], [], []
        self.row_text = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)
        if tag == "tr" and attrs.get("class") in ("done", "failed"):
            self.row_text = []
            self.rows.append((attrs["class"], self.row_text))
        for key in ("href", "src"):
            if key in attrs:
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()
        if tag == "tr":
            self.row_text = None

    def handle_data(self, data):
        if self.row_text is not None:
            self.row_text.append(data)


def parse(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    page = Page(text)
    assert page.stack == [], page.stack  # every element closed
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    return page


def resolve(folder: Path, link: str) -> Path:
    parsed = urlparse(link)
    assert not parsed.scheme and not parsed.netloc, link  # nothing from the network
    return folder / unquote(parsed.path, errors="surrogateescape")


def all_pages(folder: Path) -> list[Page]:
    pages, number = [], 1
    while (folder / page_name(number)).exists():
        pages.append(parse(folder / page_name(number)))
        number += 1
    return pages


def _png(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path, format="PNG")
    return str(path)


def test_pages_links_rows_and_escaping(tmp_path):
    folder = tmp_path / "out"
    report = Report(str(folder), "100 <b>&", page_size=3)
    for n, name in enumerate(HOSTILE):
        base = folder / "some dir" / name
        files = [_png(Path(f"{base}_heatmap.png")), str(base) + "_toptenscores.txt"]
        if n != 6:
            files += [_png(Path(f"{base}_as_inputted_into_the_dnn.png")), _png(Path(f"{base}_overlay.png"))]
        row = ReportRow.from_files(f"images/{name}", files, top5=[(1, "n01443537 gold<fish>", 0.75), (2, "", 0.25)],
                                   target=-1, classes=[1])
        report.add(row)
        pages = all_pages(folder)
        # after every row: valid pages, rows = rows added, every link resolves
        assert sum(len(p.rows) for p in pages) == n + 1
        assert [len(p.rows) for p in pages][:-1] == [3] * (len(pages) - 1)
        for page in pages:
            for link in page.links:
                assert resolve(folder, link).exists(), link
    pages = all_pages(folder)
    assert [len(p.rows) for p in pages] == [3, 3, 1]
    texts = ["".join(text) for page in pages for _, text in page.rows]
    for name, text in zip(HOSTILE, texts, strict=True):
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        assert shown in text  # the name as it is, not as markup
        assert "gold<fish> (1)" in text and "75.0 %" in text and "25.0 %" in text
    images = [link for page in pages for link in page.links if not link.startswith("report")]
    assert len(images) == 2 * (3 * 6 + 1)  # each picture is an <img> inside an <a> to itself
    assert {resolve(folder, link).name for link in images} >= {f"{HOSTILE[0]}_heatmap.png", f"{HOSTILE[5]}_overlay.png"}
    raw = (folder / "report.html").read_text(encoding="utf-8")
    assert "<b>" not in raw.replace("<b>&amp;", "") and "&lt;b&gt;" in raw
    nav = [[link for link in p.links if link.startswith("report")] for p in pages]
    assert nav == [["report-2.html"] * 2, ["report.html", "report-3.html"] * 2, ["report-2.html"] * 2]
    assert "no overlay" in texts[6] and "no input" in texts[6]


def test_failed_rows_and_resumed_top5(tmp_path):
    topten = tmp_path / "x.jpg_toptenscores.txt"
    topten.write_text("".join(f"{c} {p}\n" for c, p in [(5, 0.5), (3, 0.25), (1, 0.125), (0, 0.1), (2, 0.05),
                                                         (4, 0.01)]))
    names = [f"n0000000{i} class{i}" for i in range(6)]
    assert read_top5(str(topten), names) == [(5, names[5], 0.5), (3, names[3], 0.25), (1, names[1], 0.125),
                                             (0, names[0], 0.1), (2, names[2], 0.05)]
    report = Report(str(tmp_path), "0")
    report.add(ReportRow("broken <img>.jpg", error="broken <img>.jpg: not an image"))
    page = parse(tmp_path / "report.html")
    assert [cls for cls, _ in page.rows] == ["failed"]
    assert "broken <img>.jpg: not an image" in "".join(page.rows[0][1]) and page.links == []


def _cli(*args, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return [sys.executable, "-c", "from lrp_cli.cli import lrp_demo; lrp_demo()", *map(str, args)], dict(
        cwd=cwd, env=env, **kwargs)


def test_report_of_the_shipped_demo(tmp_path):
    args, kw = _cli(ROOT / "configs/config_sequential.txt", ROOT / "testfilelist.txt", ROOT, "--report", "--quiet",
                    "--npy", cwd=tmp_path)
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "lrp_output"
    page = parse(folder / "report.html")
    assert [cls for cls, _ in page.rows] == ["done"] * 7
    for link in page.links:
        assert resolve(folder, link).is_file(), link
    first = "".join(page.rows[0][1])
    assert "goldfish2.jpg" in first and "goldfish, Carassius auratus (1)" in first
    base = folder / "someimages" / "goldfish2.jpg"
    heat, over, photo = (np.asarray(Image.open(f"{base}{suffix}"), dtype=float)
                         for suffix in ("_heatmap.png", "_overlay.png", "_as_inputted_into_the_dnn.png"))
    config = load_config(ROOT / "configs/config_sequential.txt")
    x = np.abs(normalized(np.load(f"{base}_rawhm.npy"), config.heatmap_colormap, config.heatmap_clip_percentile))
    weak, strong = x < 1e-4, x == 1
    assert weak.mean() > 0.01 and strong.any()
    assert np.abs(over - photo)[weak].max() <= 0.01 * 255 + 1  # the photo where relevance is near zero
    assert np.abs(over - heat)[strong].max() <= 1  # opaque heat where it is strongest

    # resumed: every entry skipped, the rows come back with their top-5 read from the top-10 files
    (folder / "report.html").unlink()
    args, kw = _cli(ROOT / "configs/config_sequential.txt", ROOT / "testfilelist.txt", ROOT, "--report",
                    "--skip-existing", "--quiet", "--npy", cwd=tmp_path)
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, out.stderr
    again = parse(folder / "report.html")
    assert ["".join(t) for _, t in again.rows] == ["".join(t) for _, t in page.rows]


def test_report_needs_the_pngs(tmp_path):
    args, kw = _cli(ROOT / "configs/config_sequential.txt", ROOT / "testfilelist.txt", ROOT, "--report",
                    "--minimal-output", cwd=tmp_path)
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    assert out.returncode == 2 and "--minimal-output" in out.stderr and len(out.stderr.splitlines()) == 1


def test_killed_run_leaves_a_valid_report(tmp_path):
    photos = sorted((SHARED / "data" / "images").glob("*.jpg"))
    if len(photos) < 4:
        pytest.skip("needs the shared photos")
    images = tmp_path / "someimages"
    images.mkdir()
    for n in range(40):
        (images / f"img{n:02d}.jpg").symlink_to(photos[n % len(photos)])
    (tmp_path / "list.txt").write_text("".join(f"someimages/img{n:02d}.jpg -1\n" for n in range(40)))
    args, kw = _cli(ROOT / "configs/config_sequential.txt", tmp_path / "list.txt", tmp_path, "--report", "--quiet",
                    "--batch-size", "1", cwd=tmp_path)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    folder = tmp_path / "lrp_output"
    try:
        while process.poll() is None:
            if (folder / "report.html").exists() and len(parse(folder / "report.html").rows) >= 3:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read().decode()
    finally:
        process.kill()
        process.stderr.close()
    page = parse(folder / "report.html")
    done = sorted(p.name for p in (folder / "someimages").glob("*_overlay.png"))
    assert 3 <= len(page.rows) <= len(done) < 40
    for link in page.links:
        assert resolve(folder, link).is_file(), link
