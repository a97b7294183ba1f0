"""The peak memory of a child process, measured by the child itself.

``ru_maxrss`` from ``wait4`` is no good for children of a large test process: Linux carries the RSS high-water
mark across ``exec``, so a child forked from a pytest process holding 3 GB reports 3 GB. ``VmHWM`` in
``/proc/self/status`` belongs to the address space that ``exec`` made; :data:`PYTHON` runs Python so that the child
writes it at exit into the file named by :data:`HWM_FILE_VARIABLE`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HWM_FILE_VARIABLE = "LRP_CLI_TEST_HWM_FILE"

_PRELUDE = (
    "import atexit, os, sys\n"
    f"_hwm = os.environ.get({HWM_FILE_VARIABLE!r})\n"
    "def _write_hwm():\n"
    "    with open('/proc/self/status') as status:\n"
    "        lines = [line for line in status if line.startswith('VmHWM')]\n"
    "    if _hwm and lines:\n"
    "        with open(_hwm, 'w') as out:\n"
    "            out.write(lines[0].split()[1])\n"
    "atexit.register(_write_hwm)\n"
)


def module_command(module: str) -> list[str]:
    """``python -m module`` that reports its peak memory (see :func:`peak_bytes`)."""
    return [sys.executable, "-c", _PRELUDE + f"import runpy; runpy.run_module({module!r}, run_name='__main__')"]


def code_command(code: str) -> list[str]:
    """``python -c code`` that reports its peak memory."""
    return [sys.executable, "-c", _PRELUDE + code]


def environment(hwm_file: Path, base: dict | None = None) -> dict:
    return {**(os.environ if base is None else base), HWM_FILE_VARIABLE: str(hwm_file)}


def peak_bytes(hwm_file: Path) -> int:
    """The peak RSS the child wrote (bytes); 0 when it did not (killed by a signal)."""
    try:
        return int(hwm_file.read_text()) * 1024
    except (OSError, ValueError):
        return 0
