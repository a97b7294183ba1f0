"""matplotlib's colour maps as the toolbox used them, in numpy: 256-entry lookup tables from segment data.

The segment data (anchor points per channel) are matplotlib's published values; the table is built and indexed
with the same arithmetic as matplotlib (3.5), so the colours are identical to the bit:
- table entry k of a channel with anchors (x_i, y0_i, y1_i): with X = k/(N − 1)·(N − 1) on the scale x·(N − 1),
  linear interpolation from y1 of the anchor below to y0 of the anchor above; entry 0 = y1 of the first
  anchor, entry N − 1 = y0 of the last; clipped to [0, 1].
- a value v: index floor(v·N), v = 1 → N − 1; v < 0 → entry 0 (the "under" colour), v > 1 → entry N − 1 (the
  "over" colour), NaN → black.
"""

from __future__ import annotations

import numpy as np

from .errors import MissingExtraError, RenderError

N = 256


def _same_for_rgb(anchors):
    return {"red": anchors, "green": anchors, "blue": anchors}


def _from_colours(colours):
    """Evenly spaced colours (matplotlib's LinearSegmentedColormap.from_list) as segment data."""
    x = np.linspace(0, 1, len(colours))
    rgb = np.asarray(colours, dtype=np.float64)
    return {name: np.column_stack([x, rgb[:, c], rgb[:, c]]) for c, name in enumerate(("red", "green", "blue"))}


SEGMENTS = {
    "binary": _same_for_rgb(((0.0, 1.0, 1.0), (1.0, 0.0, 0.0))),
    "gray": _same_for_rgb(((0.0, 0, 0), (1.0, 1, 1))),
    "jet": {
        "red": ((0.00, 0, 0), (0.35, 0, 0), (0.66, 1, 1), (0.89, 1, 1), (1.00, 0.5, 0.5)),
        "green": ((0.000, 0, 0), (0.125, 0, 0), (0.375, 1, 1), (0.640, 1, 1), (0.910, 0, 0), (1.000, 0, 0)),
        "blue": ((0.00, 0.5, 0.5), (0.11, 1, 1), (0.34, 1, 1), (0.65, 0, 0), (1, 0, 0)),
    },
    "hot": {
        "red": ((0.0, 0.0416, 0.0416), (0.365079, 1.0, 1.0), (1.0, 1.0, 1.0)),
        "green": ((0.0, 0.0, 0.0), (0.365079, 0.0, 0.0), (0.746032, 1.0, 1.0), (1.0, 1.0, 1.0)),
        "blue": ((0.0, 0.0, 0.0), (0.746032, 0.0, 0.0), (1.0, 1.0, 1.0)),
    },
    "bwr": _from_colours(((0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0))),
    "seismic": _from_colours(((0.0, 0.0, 0.3), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0))),
}


def segment_table(anchors, n: int = N) -> np.ndarray:
    """The n-entry table of one channel from its anchors (x, y_below, y_above) (see the module docstring)."""
    data = np.asarray(anchors, dtype=np.float64)
    x, y0, y1 = data[:, 0] * (n - 1), data[:, 1], data[:, 2]
    xind = (n - 1) * np.linspace(0, 1, n) ** 1.0
    ind = np.searchsorted(x, xind)[1:-1]
    distance = (xind[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    table = np.concatenate([[y1[0]], distance * (y0[ind] - y1[ind - 1]) + y1[ind - 1], [y0[-1]]])
    return np.clip(table, 0.0, 1.0)


def lookup_table(name: str) -> np.ndarray:
    """N×3 RGB table of a built-in map."""
    segments = SEGMENTS[name]
    return np.stack([segment_table(segments[c]) for c in ("red", "green", "blue")], axis=1)


def table_indices(values: np.ndarray, n: int = N) -> np.ndarray:
    """Table index per value (−1 for NaN): floor(v·n) clipped to [0, n − 1] (v = 1 → n − 1)."""
    scaled = np.asarray(values, dtype=np.float64) * n
    with np.errstate(invalid="ignore"):
        index = np.clip(np.where(scaled < 0, 0, scaled), 0, n - 1)
    index = np.where(np.isnan(scaled), -1, np.floor(np.nan_to_num(index, nan=0.0)))
    return index.astype(np.intp)


class ColourMap:
    """values (any shape) → RGB (shape + (3,)) through a lookup table, NaN → black."""

    def __init__(self, table: np.ndarray):
        self.table = np.vstack([table, np.zeros((1, 3))])  # last row: the "bad" colour for NaN

    def __call__(self, values) -> np.ndarray:
        return self.table[table_indices(values, self.table.shape[0] - 1)]


def _matplotlib_map(name: str) -> ColourMap:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            f"colour map {name!r} needs matplotlib: pip install 'lrp_cli[colormaps]' (built in: "
            f"{', '.join(sorted(SEGMENTS))})") from None
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise RenderError(f"unknown colour map {name!r}") from None
    return ColourMap(cmap(np.arange(cmap.N))[:, :3])  # integer input indexes the table itself


def colormap(name: str) -> ColourMap:
    """The colour map called ``name``: built in, else matplotlib's (optional)."""
    if not isinstance(name, str):
        raise RenderError(f"colour map names are strings, got {name!r}")
    if name in SEGMENTS:
        return ColourMap(lookup_table(name))
    return _matplotlib_map(name)
