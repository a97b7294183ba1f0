"""``report.html``: a static page of a run, one row per image, written as results arrive.

Each row shows the input crop, the heatmap and the overlay (the PNGs the run wrote, linked relative to the page),
the top-5 classes as a small bar chart of their probabilities, the target and the formula.  Plain HTML and CSS:
no script, nothing fetched from the network.

Every added row rewrites the current page atomically (temporary file + rename), so a run killed at any moment
leaves a valid page of the images done so far.  Pages hold ``page_size`` rows: ``report.html``, then
``report-2.html``, ``report-3.html``, … linked by previous/next; a page gets its "next" link when the next page
is written.  File names are escaped for HTML and percent-encoded in links, so any name is shown as it is.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from .outputs import SUFFIXES, atomic_open

__all__ = [
    "OVERLAY_SUFFIX",
    "PAGE_SIZE",
    "REPORT_NAME",
    "Report",
    "ReportRow",
    "formula_text",
    "page_name",
    "read_top5",
    "row_for_result",
]

REPORT_NAME = "report.html"
PAGE_SIZE = 200
_WNID = re.compile(r"^n[0-9]{8} ")
#: The overlay PNG written for the report next to the other outputs: ``<name>_overlay.png``.
OVERLAY_SUFFIX = SUFFIXES["overlay"]


def page_name(number: int) -> str:
    """``report.html`` for page 1, ``report-N.html`` after it."""
    return REPORT_NAME if number == 1 else f"report-{number}.html"


@dataclass(frozen=True)
class ReportRow:
    """One image: its list path, the PNGs written for it (None: not written), the top-5 as (class, name,
    probability), the list's target and the explained classes; ``error`` for an entry that failed."""

    input: str
    crop: str | None = None
    heatmap: str | None = None
    overlay: str | None = None
    top5: list[tuple[int, str, float]] = field(default_factory=list)
    target: int | None = None
    classes: list[int] = field(default_factory=list)
    error: str | None = None

    @staticmethod
    def from_files(input_path: str, files: list[str], **kwargs) -> ReportRow:
        """The row of an entry whose outputs are ``files`` (each is the output base + one suffix)."""

        def find(suffix: str) -> str | None:
            return next((f for f in files if f.endswith(suffix)), None)

        return ReportRow(input_path, find(SUFFIXES["as_inputted"]), find(SUFFIXES["heatmap"]), find(OVERLAY_SUFFIX),
                         **kwargs)


def row_for_result(result, names: list[str]) -> ReportRow:
    """The row of a :class:`lrp_cli.run.Result`: its files and top-5; a resumed (skipped) entry's top-5 is read
    back from its top-10 file."""
    entry = result.entry
    if result.error:
        return ReportRow(entry.path, target=entry.target, error=result.error)
    top5 = list(result.top)
    topten = next((f for f in result.files if f.endswith(("_toptenscores.txt", "_top10scores.txt"))), None)
    if not top5 and topten is not None:
        try:
            top5 = read_top5(topten, names)
        except (OSError, ValueError, IndexError):
            top5 = []
    classes = list(result.classes)
    if not classes and top5:  # resumed: the explained classes follow from the target and the ranking
        ranked = [c for c, _, _ in top5]
        classes = ranked if entry.target == -2 else ranked[:1] if entry.target < 0 else [entry.target]
    return ReportRow.from_files(entry.path, result.files, top5=top5, target=entry.target, classes=classes)


def formula_text(config, short: bool = False) -> str:
    """``"100 (composite: …), β = 1, ε = 1"`` for a config; ``short``: ``"100, β = 1, ε = 1"``."""
    from .composite import formula

    about = "" if short else f" ({formula(config.relpropformulatype).description})"
    return f"{config.relpropformulatype}{about}, β = {config.alphabeta_beta:g}, ε = {config.epsstab:g}"


def _text(value: object) -> str:
    """HTML-escaped text; undecodable bytes of file names (surrogate escapes) become U+FFFD."""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(text, quote=True)


def read_top5(topten_path: str, names: list[str]) -> list[tuple[int, str, float]]:
    """The first five ``<class> <probability>`` lines of a top-10 file, with class names (for resumed entries)."""
    top = []
    with open(topten_path, encoding="utf-8") as f:
        for line in list(f)[:5]:
            cls, prob = line.split()[:2]
            top.append((int(cls), names[int(cls)] if 0 <= int(cls) < len(names) else "", float(prob)))
    return top


_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d1d1f;
       background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; margin: 0 0 12px; }
nav { margin: 10px 0; }
nav a, nav span { margin-right: 16px; }
table { border-collapse: collapse; background: white; box-shadow: 0 1px 3px rgba(0,0,0,.12); table-layout: fixed; }
th { text-align: left; font-weight: 600; background: #f0f0f2; padding: 8px 10px; border-bottom: 1px solid #ddd; }
td { padding: 8px 10px; border-bottom: 1px solid #eee; vertical-align: top; overflow: hidden; }
th.num, td.num { width: 28px; color: #888; text-align: right; }
th.about, td.about { width: 190px; }
th.pic, td.pic { width: 150px; }
th.top5, td.top5 { width: 300px; }
.file { font-weight: 600; word-break: break-all; }
.path { font-family: ui-monospace, Menlo, monospace; font-size: 11px; color: #777; word-break: break-all; }
td img, .missing { display: block; width: 150px; height: 150px; object-fit: contain; background: #eee; }
.missing { display: flex; align-items: center; justify-content: center; color: #999; }
.bar { position: relative; height: 22px; margin: 0 0 4px; background: #f0f0f2; border-radius: 3px; overflow: hidden; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; background: #f6bd8c; }
.bar .fill.first { background: #ef8a4c; }
.bar .label { position: relative; display: block; padding: 0 6px; line-height: 22px; font-size: 12px;
              white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.bar .p { float: right; padding-left: 6px; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fff3f3; }
.error { color: #b00020; }
.small { color: #666; font-size: 12px; }
"""


class Report:
    """Writes ``report.html`` (and further pages) into ``folder``; :meth:`add` one row per finished image.

    ``formula`` describes the run in the page's heading, ``formula_short`` (default: the same) in every row.
    """

    def __init__(self, folder: str, formula: str, title: str = "lrp_cli report", page_size: int = PAGE_SIZE,
                 formula_short: str | None = None):
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.folder = folder
        self.formula = formula
        self.formula_short = formula_short or formula
        self.title = title
        self.page_size = page_size
        self.page = 1
        self.rows: list[str] = []  # the current page's rows, as HTML
        self.previous_rows: list[str] = []  # the page before, kept until its "next" link is written
        self.count = 0

    @property
    def path(self) -> str:
        """The page being written."""
        return os.path.join(self.folder, page_name(self.page))

    def add(self, row: ReportRow) -> None:
        """Append a row and rewrite the current page (and, when a page is started, the one before it)."""
        if len(self.rows) == self.page_size:
            self.previous_rows, self.rows = self.rows, []
            self.page += 1
        self.count += 1
        self.rows.append(self._row(row, self.count))
        self._write(self.page, self.rows, has_next=False)
        if len(self.rows) == 1 and self.page > 1:  # the previous page now has a next page to link to
            self._write(self.page - 1, self.previous_rows, has_next=True)
            self.previous_rows = []

    # -- HTML ------------------------------------------------------------------------------------------------------
    def _link(self, path: str) -> str:
        """A path of the run as an href relative to the report's folder: percent-encoded, then HTML-escaped."""
        relative = os.path.relpath(path, self.folder).replace(os.sep, "/")
        return html.escape(quote(relative, safe="/", errors="surrogateescape"), quote=True)

    def _image(self, path: str | None, what: str) -> str:
        if path is None:
            return f'<td class="pic"><div class="missing">no {what}</div></td>'
        href = self._link(path)
        alt = _text(f"{what} of {os.path.basename(path)}")
        return f'<td class="pic"><a href="{href}"><img src="{href}" alt="{alt}" loading="lazy"></a></td>'

    def _top5(self, top5: list[tuple[int, str, float]]) -> str:
        bars = []
        for i, (cls, name, prob) in enumerate(top5):
            width = max(0.0, min(100.0, 100.0 * prob))
            short = _WNID.sub("", name)  # "n01443537 goldfish, Carassius auratus" → "goldfish, Carassius auratus"
            label = _text(f"{short} ({cls})" if short else str(cls))
            first = " first" if i == 0 else ""
            bars.append(
                f'<div class="bar" title="{_text(name)}"><span class="fill{first}" style="width:{width:.1f}%"></span>'
                f'<span class="label"><span class="p">{100 * prob:.1f} %</span>{label}</span></div>'
            )
        return "".join(bars) or '<span class="small">not available</span>'

    def _about(self, row: ReportRow) -> str:
        folder, file = os.path.split(row.input)
        text = f'<div class="file">{_text(file)}</div><div class="path">{_text(folder)}</div>'
        if row.error is None:
            target = {-2: "top-5"}.get(row.target, "top-1" if row.target is not None and row.target < 0 else row.target)
            text += (f'<div class="small">target {_text(target)}<br>explained {_text(", ".join(map(str, row.classes)))}'
                     f"<br>formula {_text(self.formula_short)}</div>")
        return f'<td class="about">{text}</td>'

    def _row(self, row: ReportRow, number: int) -> str:
        start = f'<td class="num">{number}</td>{self._about(row)}'
        if row.error is not None:
            return f'<tr class="failed">{start}<td colspan="4" class="error">{_text(row.error)}</td></tr>'
        return (f'<tr class="done">{start}{self._image(row.crop, "input")}{self._image(row.heatmap, "heatmap")}'
                f'{self._image(row.overlay, "overlay")}<td class="top5">{self._top5(row.top5)}</td></tr>')

    def _nav(self, page: int, has_next: bool) -> str:
        parts = []
        if page > 1:
            parts.append(f'<a href="{page_name(page - 1)}">← page {page - 1}</a>')
        parts.append(f"<span>page {page}</span>")
        if has_next:
            parts.append(f'<a href="{page_name(page + 1)}">page {page + 1} →</a>')
        return "<nav>" + "".join(parts) + "</nav>"

    def _write(self, page: int, rows: list[str], has_next: bool) -> None:
        first = (page - 1) * self.page_size + 1
        nav = self._nav(page, has_next)
        text = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_text(self.title)} — page {page}</title>"
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n'
            f"<body><h1>{_text(self.title)}</h1>"
            f'<p class="meta">formula {_text(self.formula)} · images {first}–{first + len(rows) - 1} · '
            "written as the run goes on</p>"
            f'{nav}\n<table><thead><tr><th class="num">#</th><th class="about">image</th>'
            '<th class="pic">input crop</th><th class="pic">heatmap</th><th class="pic">overlay</th>'
            '<th class="top5">top-5 classes</th></tr></thead><tbody>\n'
            + "\n".join(rows)
            + f"\n</tbody></table>{nav}</body></html>\n"
        )
        with atomic_open(os.path.join(self.folder, page_name(page))) as f:
            f.write(text.encode("utf-8"))
