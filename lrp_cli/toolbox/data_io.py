"""Read and write data matrices (toolbox python/data_io.py), meant to be N×D.

| format | read | write |
|---|---|---|
| ``npy``, none | ``numpy.load`` (no pickles) | ``numpy.save`` to exactly ``path`` |
| ``npz`` | the array ``data`` (or the only array) of the archive | an archive with the array under ``data`` |
| ``txt`` | ``numpy.loadtxt`` (a one-row file comes back 1-D) | ``numpy.savetxt`` (``%.18e``, one space, ``\\n``) |
| ``mat`` | ``scipy.io.loadmat(path)['data']`` (at least 2-D) | ``scipy.io.savemat(path, {'data': data})`` |

``.mat`` needs scipy: ``pip install 'lrp_cli[mat]'``. Differences from the original: an ``.npz`` is a real archive
both ways (the original wrote ``x.npz.npy`` and read back numpy's lazy mapping), and ``.npy`` files holding
Python objects are refused (loading them runs code).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .errors import DataFileError, MissingExtraError, ToolboxFileNotFoundError

FORMATS = ("npy", "npz", "", "txt", "mat")


def _format_of(path, fmt) -> str:
    if fmt is None:
        fmt = os.path.splitext(str(path))[1].replace(".", "").lower()
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise DataFileError(f"{path}: unknown data format {fmt!r} (known: npy, npz, txt, mat)")
    return fmt


def _scipy_io(path):
    try:
        import scipy.io
    except ImportError:
        raise MissingExtraError(f"{path}: .mat files need scipy: pip install 'lrp_cli[mat]'") from None
    return scipy.io


def read(path, fmt=None) -> np.ndarray:
    """The data array in ``path``; the format from the extension unless ``fmt`` is given."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolboxFileNotFoundError(f"{path}: no such data file")
    fmt = _format_of(path, fmt)
    try:
        if fmt in ("npy", ""):
            return np.load(path, allow_pickle=False)
        if fmt == "npz":
            return _read_npz(path)
        if fmt == "txt":
            return np.array(np.loadtxt(path))
        scipy_io = _scipy_io(path)
        contents = scipy_io.loadmat(path)
        if "data" not in contents:
            raise DataFileError(f"{path}: the .mat file has no matrix named 'data'")
        return np.array(contents["data"])
    except (ValueError, OSError, zipfile.BadZipFile, NotImplementedError) as err:
        if isinstance(err, DataFileError):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataFileError(f"{path}: not readable as {fmt or 'npy'} data ({message})") from None


def _read_npz(path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = archive.files
        if "data" in names:
            return archive["data"]
        if len(names) == 1:
            return archive[names[0]]
    raise DataFileError(f"{path}: the archive holds {len(names)} arrays ({', '.join(names)}) and none named 'data'")


def write(data, path, fmt=None) -> None:
    """Write the array ``data`` to exactly ``path``; the format from the extension unless ``fmt`` is given."""
    path = os.fspath(path)
    fmt = _format_of(path, fmt)
    data = np.asarray(data)
    if fmt == "mat":
        _scipy_io(path).savemat(path, {"data": data}, appendmat=False)
        return
    with open(path, "wb") as f:  # a file object: numpy appends .npy/.npz to other names
        if fmt in ("npy", ""):
            np.save(f, data, allow_pickle=False)
        elif fmt == "npz":
            np.savez(f, data=data)
        else:
            np.savetxt(f, data)
