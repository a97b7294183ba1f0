"""The demonstrator's line-pair config file (spec §2), parsed strictly.

Format, as the original reads it: a line whose trimmed text *begins with* a key name (prefix test)
names that key, and the next physical line holds its value.  Every key is looked up from the top of
the file, so the first matching line wins (value and comment lines included); unknown lines are
ignored, the order is free and CRLF line ends work.  Strings take the first whitespace token of the
value line, so paths cannot contain spaces (as in the original).

Fixed on purpose (decisions.md): everything the original crashed on or silently mis-read is a
one-line :class:`~lrp_cli.errors.ConfigError` naming the file, the line and the key — a missing file
or key, a key without a value line, an int value that is not a whole integer (``1.5`` and ``12abc``
are errors, not 1 and 12), a float that is not a number, an out-of-range mode, β < 0 or β ≥ 2^24
(:data:`MAX_BETA`), ``baseimgsize`` or ``numclasses`` ≤ 0, and model/mean/synset files that are not
regular files.  A config that is not ASCII-compatible text (UTF-16/32, binary) is named as such, and
one that is not a regular file (a FIFO, /dev/zero) or larger than 1 MiB is refused unread.
Whitespace-only lines are simply ignored and a UTF-8 byte-order mark is tolerated.  Lines longer than
2999 characters are not cut (the original's buffer limit is not reproduced).

Relative paths of ``param_file``, ``model_file``, ``mean_file`` and ``synsetfile`` are looked up in
the working directory first (as the original did) and then next to the config file, so shipped
configs work from anywhere.  ``standalone_outpath`` is kept exactly as written and, like the
original, is relative to the working directory (it is *not* resolved against the config's folder).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .errors import ConfigError
from .files import display_path, open_regular, text_encoding_problem
from .render import COLORMAPS, DEFAULT_CLIP_PERCENTILE

__all__ = [
    "Config",
    "EXTENSION_KEYS",
    "FILE_KEYS",
    "ORIGINAL_KEYS",
    "load_config",
    "parse_config",
]

#: The 15 keys of the original, in its lookup order (§2.2), with their types.
ORIGINAL_KEYS: tuple[tuple[str, type], ...] = (
    ("param_file", Path),
    ("model_file", Path),
    ("mean_file", Path),
    ("use_mean_file_asbinaryprotoblob", int),
    ("lastlayerindex", int),
    ("firstlayerindex", int),
    ("synsetfile", Path),
    ("baseimgsize", int),
    ("standalone_outpath", str),
    ("standalone_rootpath", str),
    ("relpropformulatype", int),
    ("epsstab", float),
    ("alphabeta_beta", float),
    ("numclasses", int),
    ("auxiliaryvariable_maxlayerindexforflatdistinconv", int),
)

#: Keys naming input files that must exist as regular files.
FILE_KEYS: tuple[str, ...] = ("param_file", "model_file", "mean_file", "synsetfile")

#: Optional lrp_cli keys (same line-pair format) → allowed values (None = any integer, float = a number) and default.
EXTENSION_KEYS: Mapping[str, tuple[tuple[str, ...] | type | None, object]] = MappingProxyType(
    {
        "lrn_relevance": (("original", "identity"), "original"),
        "heatmap_colormap": (COLORMAPS, "original"),
        "heatmap_clip_percentile": (float, DEFAULT_CLIP_PERCENTILE),
        "mean_alignment": (("original", "centered"), "original"),
        "default_target": (None, None),
    }
)

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_INT32 = (-(2**31), 2**31 - 1)
#: Largest config file read (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 2**20
#: β must stay below 2^24: from there on α = 1 + β rounds to β in float32, so α − β = 1 (relevance conservation)
#: no longer holds, and the α·z⁺ and β·z⁻ terms soon overflow to ±Inf (β ≥ 1e38 gave all-NaN heatmaps).
MAX_BETA = float(2**24)


@dataclass(frozen=True)
class Config:
    """A parsed config.  Paths of :data:`FILE_KEYS` are resolved, absolute :class:`Path` objects.

    ``raw`` maps every key found to the value token as written, ``lines`` to the 1-based line
    number of its key line (use :meth:`where` to name a key in an error message).
    """

    source: str
    param_file: Path
    model_file: Path
    mean_file: Path
    use_mean_file_asbinaryprotoblob: int
    lastlayerindex: int
    firstlayerindex: int
    synsetfile: Path
    baseimgsize: int
    standalone_outpath: str
    standalone_rootpath: str
    relpropformulatype: int
    epsstab: float
    alphabeta_beta: float
    numclasses: int
    auxiliaryvariable_maxlayerindexforflatdistinconv: int
    lrn_relevance: str = "original"
    heatmap_colormap: str = "original"
    heatmap_clip_percentile: float = DEFAULT_CLIP_PERCENTILE
    mean_alignment: str = "original"
    default_target: int | None = None
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def where(self, key: str) -> str:
        """``"<file> line N (key)"`` for messages about a key's value found later (e.g. by the net)."""
        line = self.lines.get(key)
        return f"{self.source} line {line} ({key})" if line else f"{self.source} ({key})"


def _err(source: str, line: int | None, key: str | None, problem: str) -> ConfigError:
    where = f"{source} line {line}" if line else source
    return ConfigError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _split_lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    return lines


def _trim(line: str) -> str:
    # the original trims spaces and tabs; a CR is dropped too so CRLF files behave the same
    return line.rstrip("\r").strip(" \t")


def _lookup(key: str, trimmed: list[str], raw_lines: list[str], source: str) -> tuple[int, str] | None:
    """First line beginning with ``key`` → (1-based line number, first value token); None if absent."""
    for i, line in enumerate(trimmed):
        if not line.startswith(key):
            continue
        if i + 1 >= len(raw_lines):
            raise _err(source, i + 1, key, "key is on the last line, its value line is missing")
        tokens = raw_lines[i + 1].split()
        if not tokens:
            raise _err(source, i + 2, key, "empty value line (the value must be on the line right after the key)")
        return i + 1, tokens[0]
    return None


def _parse_int(token: str, source: str, line: int, key: str) -> int:
    """Strict integer: an optional sign and digits only, within the 32-bit range of the original."""
    if not _INT_RE.match(token):
        raise _err(source, line + 1, key, f"value {token!r} is not an integer")
    value = int(token)
    if not _INT32[0] <= value <= _INT32[1]:
        raise _err(source, line + 1, key, f"value {token} is out of the 32-bit integer range")
    return value


def _parse_float(token: str, source: str, line: int, key: str) -> float:
    """Strict decimal number (``1``, ``0.5``, ``1e-10``), rounded to float32 like the original's member."""
    if not _FLOAT_RE.match(token):
        raise _err(source, line + 1, key, f"value {token!r} is not a number")
    with np.errstate(over="ignore"):
        value = float(np.float32(float(token)))
    if not math.isfinite(value):
        raise _err(source, line + 1, key, f"value {token} is out of the float32 range")
    return value


def _resolve_file(token: str, source: str, line: int, key: str, cwd: Path, config_dir: Path, cut: bool) -> Path:
    p = Path(token)
    candidates = [p] if p.is_absolute() else [cwd / p, config_dir / p]
    for c in candidates:
        if os.path.lexists(c):
            if not c.is_file():
                raise _err(source, line + 1, key, f"{token} is not a regular file ({os.path.abspath(c)})")
            return Path(os.path.abspath(c))
    looked = " or ".join(str(os.path.abspath(c)) for c in dict.fromkeys(candidates))
    hint = "; the value is cut at the first whitespace, paths cannot contain spaces" if cut else ""
    raise _err(source, line + 1, key, f"file {token} not found (looked for {looked}){hint}")


def parse_config(
    text: str,
    source: str = "<config>",
    *,
    config_dir: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    check_files: bool = True,
) -> Config:
    """Parse config text.  ``source`` names the file in errors; relative input files are looked up
    in ``cwd`` (default: the working directory) and then in ``config_dir`` (default: ``cwd``).

    With ``check_files=False`` the four input files are only made absolute against ``cwd`` and not
    required to exist (for inspecting a config away from its models).
    """
    cwd_p = Path(cwd) if cwd is not None else Path.cwd()
    cfg_dir = Path(config_dir) if config_dir is not None else cwd_p
    reader = _Reader(text, source)
    values: dict[str, object] = {}
    for key, typ in ORIGINAL_KEYS:
        line, token = reader.require(key)
        if typ is int:
            values[key] = _parse_int(token, source, line, key)
        elif typ is float:
            values[key] = _parse_float(token, source, line, key)
        elif typ is Path and check_files:
            cut = len(reader.raw_lines[line].split()) > 1
            values[key] = _resolve_file(token, source, line, key, cwd_p, cfg_dir, cut)
        elif typ is Path:
            values[key] = Path(os.path.abspath(cwd_p / token))
        else:
            values[key] = token
    for key, (allowed, default) in EXTENSION_KEYS.items():
        found = reader.find(key)
        if found is None:
            values[key] = default
        elif allowed is None:
            values[key] = _parse_int(found[1], source, found[0], key)
        elif allowed is float:
            values[key] = _parse_float(found[1], source, found[0], key)
        elif found[1] in allowed:
            values[key] = found[1]
        else:
            raise _err(source, found[0] + 1, key, f"value {found[1]!r} is not one of: {', '.join(allowed)}")
    reader.check_ranges(values)
    return Config(source=source, raw=MappingProxyType(reader.raw), lines=MappingProxyType(reader.lines), **values)


class _Reader:
    """The lines of a config, and what was found for each key: its value token (``raw``) and line (``lines``)."""

    def __init__(self, text: str, source: str):
        self.source = source
        self.raw_lines = _split_lines(text)
        self.trimmed = [_trim(line) for line in self.raw_lines]
        self.raw: dict[str, str] = {}
        self.lines: dict[str, int] = {}

    def find(self, key: str) -> tuple[int, str] | None:
        found = _lookup(key, self.trimmed, self.raw_lines, self.source)
        if found is not None:
            self.lines[key], self.raw[key] = found
        return found

    def require(self, key: str) -> tuple[int, str]:
        found = self.find(key)
        if found is None:
            raise _err(self.source, None, key,
                       "missing key (all 15 keys are required: the key on one line, its value on the next)")
        return found

    def check_ranges(self, values: dict[str, object]) -> None:
        def check(key: str, ok: bool, problem: str) -> None:
            if not ok:
                raise _err(self.source, self.lines[key] + 1, key, f"value {self.raw[key]} {problem}")

        check("use_mean_file_asbinaryprotoblob", values["use_mean_file_asbinaryprotoblob"] in (0, 1, 2),
              "is not 0 (text mean), 1 (binaryproto, BGR) or 2 (binaryproto, RGB)")
        check("alphabeta_beta", values["alphabeta_beta"] >= 0, "is negative (β must be ≥ 0; α = 1 + β)")
        check("alphabeta_beta", values["alphabeta_beta"] < MAX_BETA,
              "is too large (β must be below 2^24 = 16777216: above it α = 1 + β rounds to β in float32)")
        check("baseimgsize", values["baseimgsize"] > 0, "must be a positive image size")
        check("numclasses", values["numclasses"] > 0, "must be a positive number of classes")
        if "heatmap_clip_percentile" in self.raw:
            check("heatmap_clip_percentile", 0 < values["heatmap_clip_percentile"] <= 100, "is not in (0, 100]")


def load_config(path: str | os.PathLike, *, cwd: str | os.PathLike | None = None, check_files: bool = True) -> Config:
    """Read and parse the config file at ``path`` (see :func:`parse_config`); errors name ``path`` as given."""
    source = os.fspath(path)
    cwd_p = Path(cwd) if cwd is not None else Path.cwd()
    p = Path(source)
    full = p if p.is_absolute() else cwd_p / p
    if not os.path.lexists(full):  # a dangling symlink or a loop is reported by open_regular below
        raise ConfigError(f"{display_path(source)}: config file does not exist")
    if full.is_dir():
        raise ConfigError(f"{display_path(source)}: is a directory, not a config file")
    with open_regular(full, "config file", ConfigError, MAX_CONFIG_BYTES, label=source) as f:
        try:
            data = f.read()
        except OSError as e:
            raise ConfigError(f"{display_path(source)}: cannot read config file: {e.strerror or e}") from None
    problem = text_encoding_problem(data)  # else every key would be "missing"
    if problem:
        advice = ", not text" if problem.startswith("binary") else "; save it as UTF-8 or ASCII"
        raise ConfigError(f"{display_path(source)}: the config file is {problem}{advice}")
    text = data.decode("utf-8", errors="surrogateescape")
    return parse_config(text, source, config_dir=full.parent, cwd=cwd_p, check_files=check_files)
