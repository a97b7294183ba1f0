"""The image list (spec §3): ``<path> <target>`` per line, read lazily from a file or stdin.

Kept from the original: lines are split at ``\\n`` only; a line of at most 2 characters (a ``\\r``
counts) is skipped; the full path is ``PREPENDPATH + "/" + path`` as a plain string; target −2 asks
for the top-5 composite, any other negative value for the top-1 class, ``n ≥ 0`` for class ``n``.

Changed (decisions.md): the target is the *last* token, so paths may contain spaces; a missing or
non-integer target (``abc``, ``3.7``, ``-2junk``) is an error for that line instead of class 0 or an
abort — unless a default target is given, which then applies to lines without one (the whole line
is then the path).  An explicit ``-1000`` is simply one more negative value, i.e. top-1 (the original
aborted on it).  Lines holding only whitespace are skipped.  A UTF-8 byte-order mark is tolerated.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import FileListError

__all__ = ["FileListEntry", "FileListLineError", "TOP5", "iter_filelist", "parse_line"]

#: The target value asking for the composite of the top-5 classes.
TOP5 = -2

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_BOM = "\ufeff"


@dataclass(frozen=True)
class FileListEntry:
    """One image of the list.

    ``token`` is the path as written, ``fullpath`` the original's string ``PREPENDPATH + "/" + token``
    (used for the output-path rule), ``path`` a normalised form of it for opening the file.
    """

    source: str
    line: int
    token: str
    fullpath: str
    path: str
    target: int
    target_defaulted: bool = False

    @property
    def is_blob(self) -> bool:
        """True when the entry names a preprocessed input blob (``.npy``) instead of an image."""
        return self.token.lower().endswith(".npy")

    @property
    def is_top5(self) -> bool:
        return self.target == TOP5

    @property
    def is_top1(self) -> bool:
        return self.target < 0 and self.target != TOP5

    @property
    def class_index(self) -> int | None:
        """The explicit class asked for, or None for the top-1 / top-5 modes."""
        return self.target if self.target >= 0 else None


class FileListLineError(FileListError):
    """A bad line of the list; the caller can report it and go on with the next line."""

    def __init__(self, source: str, line: int, problem: str, text: str = ""):
        super().__init__(f"{source} line {line}: {problem}")
        self.source = source
        self.line = line
        self.text = text


def parse_line(
    text: str, prepend_path: str, *, source: str = "<list>", line: int = 0, default_target: int | None = None
) -> FileListEntry | None:
    """Parse one list line (without its ``\\n``).  None for a skipped line; raises FileListLineError."""
    if len(text) <= 2:
        return None
    body = text.strip()  # spaces, tabs, CR and other whitespace around the entry
    if not body:
        return None
    parts = body.rsplit(None, 1)
    target: int | None = None
    defaulted = False
    if len(parts) == 2 and _INT_RE.match(parts[1]):
        token, target = parts[0].rstrip(), int(parts[1])
    elif default_target is not None:
        token, target, defaulted = body, default_target, True
    elif len(parts) == 1:
        raise FileListLineError(source, line, f"no target after {body!r} (expected '<path> <class>')", text)
    else:
        raise FileListLineError(
            source, line, f"target {parts[1]!r} is not an integer (expected '<path> <class>', e.g. -1)", text
        )
    fullpath = f"{prepend_path}/{token}"
    return FileListEntry(
        source=source,
        line=line,
        token=token,
        fullpath=fullpath,
        path=os.path.normpath(fullpath),
        target=target,
        target_defaulted=defaulted,
    )


def _decode(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="surrogateescape")
    return raw


#: Longest list line read (a path is at most 4096 bytes): a longer one means the file is not a list, and reading it
#: whole (a 1 GB file without a newline) would take memory without bound, so the list is refused there.
MAX_LINE_BYTES = 1 << 16


def _bounded_lines(stream, label: str) -> Iterator[bytes]:
    """The lines of a binary stream, split at b"\n" only (like std::getline), each at most MAX_LINE_BYTES."""
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise FileListError(
                f"{label} line {number}: longer than {MAX_LINE_BYTES} bytes, not a file list line (reading stopped)"
            )
        yield line


def _lines_of_file(path: str, label: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from _bounded_lines(f, label)


def iter_filelist(
    source: str | os.PathLike | Iterable[str] | Iterable[bytes],
    prepend_path: str,
    default_target: int | None = None,
    *,
    stdin: Iterable[str] | Iterable[bytes] | None = None,
    name: str | None = None,
    on_error: str = "yield",
) -> Iterator[FileListEntry | FileListLineError]:
    """Yield the entries of a list, one line at a time (nothing is read ahead).

    ``source`` is a path, ``"-"`` for standard input (``stdin`` overrides ``sys.stdin``), or any
    iterable of lines.  A bad line is yielded as a :class:`FileListLineError` (``on_error="yield"``,
    the default) or raised (``on_error="raise"``).  A list file that is missing or not a regular
    file raises :class:`~lrp_cli.errors.FileListError` at once, before iteration starts.
    """
    if on_error not in ("yield", "raise"):
        raise ValueError(f"on_error must be 'yield' or 'raise', got {on_error!r}")
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
        path = os.fspath(source)
        label = name or path
        if not os.path.exists(path):
            raise FileListError(f"{label}: file list does not exist")
        if not os.path.isfile(path):
            raise FileListError(f"{label}: file list is not a regular file")
        if not os.access(path, os.R_OK):
            raise FileListError(f"{label}: file list is not readable")
        lines: Iterable[str] | Iterable[bytes] = _lines_of_file(path, str(label))
    elif isinstance(source, (str, os.PathLike)):
        label = name or "<stdin>"
        if stdin is None:
            stdin = getattr(sys.stdin, "buffer", sys.stdin)
        lines = _bounded_lines(stdin, str(label)) if hasattr(stdin, "readline") else stdin
    else:
        label = name or getattr(source, "name", None) or "<lines>"
        lines = source
    return _iterate(lines, str(label), prepend_path, default_target, on_error == "raise")


def _iterate(
    lines: Iterable[str] | Iterable[bytes], label: str, prepend: str, default_target: int | None, strict: bool
) -> Iterator[FileListEntry | FileListLineError]:
    for number, raw in enumerate(lines, start=1):
        text = _decode(raw)
        if number == 1 and text.startswith(_BOM):
            text = text[1:]
        if text.endswith("\n"):
            text = text[:-1]
        try:
            entry = parse_line(text, prepend, source=label, line=number, default_target=default_target)
        except FileListLineError as err:
            if strict:
                raise
            yield err
            continue
        if entry is not None:
            yield entry
