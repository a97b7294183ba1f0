"""Read and write toolbox models (toolbox python/model_io.py): the plain-text format, .npz, and pickles.

Plain text (shared with the toolbox's Matlab code): one record per layer, a header line and for Linear and
Convolution two value lines (W flattened in C order, then B)::

    Linear m n                      W: m×n (inputs × outputs)
    Convolution h w d n s0 s1       W: h×w×d×n
    SumPool h w s0 s1 | MaxPool h w s0 s1 | Flatten | Rect | Tanh | SoftMax

Numbers are written as the shortest text that reads back to the same double (what the original wrote under
numpy < 2), so write → read is exact. ``.npz``: the header lines under ``layers`` and ``W<i>``/``B<i>`` arrays.
Pickles (``.nn``, ``.pickle``, ``pickled``, no extension) run code when loaded; they are read only with
``allow_pickle=True``, and then through an unpickler that accepts nothing but the toolbox's layer classes (the
original's module names included) and numpy arrays.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np

from .errors import ModelFileError, PickleRefusedError, ToolboxFileNotFoundError
from .modules import Convolution, Flatten, Linear, MaxPool, Module, Rect, Sequential, SoftMax, SumPool, Tanh

PICKLE_FORMATS = ("pickled", "pickle", "nn", "")
FORMATS = ("txt", "npz") + PICKLE_FORMATS
PARAMETERLESS = {"Flatten": Flatten, "Rect": Rect, "Tanh": Tanh, "SoftMax": SoftMax}
POOLS = {"SumPool": SumPool, "MaxPool": MaxPool}
LAYER_NAMES = ("Linear", "Convolution", *POOLS, *PARAMETERLESS)


def _format_of(path, fmt) -> str:
    if fmt is None:
        fmt = os.path.splitext(str(path))[1].replace(".", "").lower()
    fmt = fmt.lower()
    if fmt == "mat":
        raise ModelFileError(f"{path}: .mat models belong to the toolbox's Matlab code; convert the model to .txt")
    if fmt not in FORMATS:
        raise ModelFileError(f"{path}: unknown model format {fmt!r} (known: txt, npz, nn, pickle, pickled)")
    return fmt


def read(path, fmt=None, *, allow_pickle=False) -> Sequential:
    """The model in ``path`` as a :class:`Sequential`; the format from the extension unless ``fmt`` is given.

    Reading never touches numpy's global random state (the original's did, through the layer constructors).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolboxFileNotFoundError(f"{path}: no such model file")
    fmt = _format_of(path, fmt)
    if fmt == "txt":
        return read_txt(path)
    if fmt == "npz":
        return _read_npz(path)
    if not allow_pickle:
        raise PickleRefusedError(
            f"{path}: a pickled model can run arbitrary code when loaded; read it with allow_pickle=True only if "
            "you trust the file (or ask for the model as .txt or .npz)")
    return _read_pickle(path)


def write(model, path, fmt=None) -> None:
    """Write ``model`` (a :class:`Sequential`) to ``path``; the format from the extension unless ``fmt`` is given.

    Unlike the original, writing does not clean the model: its forward state stays (and is never written).
    """
    path = os.fspath(path)
    fmt = _format_of(path, fmt)
    if not isinstance(model, Sequential):
        raise ModelFileError(f"{path}: only a Sequential model can be written, not {type(model).__name__}")
    headers = [layer_header(layer) for layer in model.modules]  # validates every layer before the file is opened
    if fmt == "txt":
        with open(path, "w", encoding="ascii", newline="\n") as f:
            f.write(format_txt(model, headers))
    elif fmt == "npz":
        arrays = {"layers": np.array(headers, dtype=str)}
        for i, layer in enumerate(model.modules):
            if isinstance(layer, (Linear, Convolution)):
                arrays[f"W{i}"], arrays[f"B{i}"] = layer.W, layer.B
        with open(path, "wb") as f:  # a file object: numpy would append .npz to other names
            np.savez(f, **arrays)
    else:
        with open(path, "wb") as f:
            pickle.dump(model, f, pickle.HIGHEST_PROTOCOL)


# ---------------------------------------------------------------- plain text
def number_text(values) -> str:
    """Values joined by single spaces, each the shortest decimal that reads back to the same double."""
    return " ".join(map(repr, np.asarray(values, np.float64).ravel().tolist()))


def layer_header(layer) -> str:
    """The header line of a layer, from its attributes (checked against its weights)."""
    name = type(layer).__name__
    if isinstance(layer, Linear):
        if layer.W.shape != (layer.m, layer.n) or layer.B.shape != (layer.n,):
            raise ModelFileError(f"Linear {layer.m} {layer.n}: W {layer.W.shape} or B {layer.B.shape} do not fit")
        return f"Linear {layer.m} {layer.n}"
    if isinstance(layer, Convolution):
        shape = (layer.fh, layer.fw, layer.fd, layer.n)
        if layer.W.shape != shape or layer.B.shape != (layer.n,):
            raise ModelFileError(f"Convolution {shape}: W {layer.W.shape} or B {layer.B.shape} do not fit")
        return "Convolution {} {} {} {} {} {}".format(*shape, *layer.stride)
    if isinstance(layer, (SumPool, MaxPool)):
        return "{} {} {} {} {}".format(name, *layer.pool, *layer.stride)
    if type(layer) in PARAMETERLESS.values():
        return name
    raise ModelFileError(f"layer {name} cannot be written (known: {', '.join(LAYER_NAMES)})")


def format_txt(model: Sequential, headers) -> str:
    """The plain-text model: every record's lines, each ended by a newline."""
    lines = []
    for header, layer in zip(headers, model.modules, strict=True):
        lines.append(header)
        if isinstance(layer, (Linear, Convolution)):
            lines += [number_text(layer.W), number_text(layer.B)]
    return "".join(line + "\n" for line in lines)


class _Lines:
    """The lines of a text model with 1-based numbers, for messages."""

    def __init__(self, path, text):
        self.path, self.lines, self.pos = path, text.split("\n"), 0

    def error(self, number, problem) -> ModelFileError:
        return ModelFileError(f"{self.path}: line {number}: {problem}")

    def next(self, what) -> tuple[int, str]:
        if self.pos >= len(self.lines) or not self.lines[self.pos].strip():
            raise self.error(self.pos + 1, f"expected {what}, found the end of the model")
        self.pos += 1
        return self.pos, self.lines[self.pos - 1]

    def numbers(self, what, count=None) -> np.ndarray:
        number, line = self.next(what)
        tokens = line.split()
        try:
            values = np.array(tokens, dtype=np.float64)
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise self.error(number, f"{what}: {bad!r} is not a number") from None
        if count is not None and values.size != count:
            raise self.error(number, f"{what}: expected {count} values, found {values.size}")
        return values


def _is_float(token) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _header_ints(lines, number, fields, count) -> list[int]:
    if len(fields) != count + 1:
        raise lines.error(number, f"{fields[0]} needs {count} numbers on its line, found {len(fields) - 1}")
    try:
        values = [int(f) for f in fields[1:]]
    except ValueError:
        raise lines.error(number, f"{fields[0]}: the sizes must be integers") from None
    if min(values) < 1:
        raise lines.error(number, f"{fields[0]}: the sizes must be positive")
    return values


def _read_linear(lines, number, fields) -> Linear:
    m, n = _header_ints(lines, number, fields, 2)
    weights = lines.numbers(f"the {m * n} weights of Linear {m} {n}")
    if weights.size == n and m > 1:  # the legacy layout: W as m lines of n values
        rows = [weights] + [lines.numbers(f"row {i + 1} of the weights of Linear {m} {n}", n) for i in range(1, m)]
        weights = np.concatenate(rows)
    elif weights.size != m * n:
        raise lines.error(lines.pos, f"Linear {m} {n}: expected {m * n} weights, found {weights.size}")
    biases = lines.numbers(f"the {n} biases of Linear {m} {n}", n)
    return Linear.from_weights(weights.reshape(m, n), biases)


def _read_convolution(lines, number, fields) -> Convolution:
    h, w, d, n, s0, s1 = _header_ints(lines, number, fields, 6)
    weights = lines.numbers(f"the {h * w * d * n} weights of Convolution {h} {w} {d} {n}", h * w * d * n)
    biases = lines.numbers(f"the {n} biases of Convolution {h} {w} {d} {n}", n)
    return Convolution.from_weights(weights.reshape(h, w, d, n), biases, (s0, s1))


def parse_txt(text: str, path="<text>") -> Sequential:
    """The model described by the plain-text ``text`` (see the module docstring).

    A blank line ends the model; layers after it are an error (the original silently dropped them). Layer names
    must match exactly (the original matched prefixes). Value counts are checked (the original broadcast a single
    bias). The legacy layout of Linear (W as m lines) is recognised per layer.
    """
    lines = _Lines(path, text)
    modules = []
    while lines.pos < len(lines.lines) and lines.lines[lines.pos].strip():
        number, line = lines.next("a layer")
        fields = line.split()
        name = fields[0]
        if name == "Linear":
            modules.append(_read_linear(lines, number, fields))
        elif name == "Convolution":
            modules.append(_read_convolution(lines, number, fields))
        elif name in POOLS:
            h, w, s0, s1 = _header_ints(lines, number, fields, 4)
            modules.append(POOLS[name](pool=(h, w), stride=(s0, s1)))
        elif name in PARAMETERLESS and len(fields) == 1:
            modules.append(PARAMETERLESS[name]())
        elif name in PARAMETERLESS:
            raise lines.error(number, f"{name} takes no numbers on its line")
        else:
            raise lines.error(number, f"unknown layer type {name!r} (known: {', '.join(LAYER_NAMES)})")
    rest = [i for i in range(lines.pos, len(lines.lines)) if lines.lines[i].strip()]
    if rest:
        raise lines.error(rest[0] + 1, "text after the blank line that ends the model")
    if not modules:
        raise ModelFileError(f"{path}: no layers in the model file")
    return Sequential(modules)


def read_txt(path) -> Sequential:
    """The plain-text model in ``path``."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: not a plain-text model (not UTF-8 text)") from None
    return parse_txt(text, path)


# ---------------------------------------------------------------- npz
def _read_npz(path) -> Sequential:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{path}: not a toolbox .npz model ({err})") from None
    if "layers" not in arrays:
        raise ModelFileError(f"{path}: not a toolbox .npz model (no 'layers' entry)")
    text = []
    for i, header in enumerate(arrays["layers"].tolist()):
        text.append(header)
        if header.split()[:1] in (["Linear"], ["Convolution"]):
            if f"W{i}" not in arrays or f"B{i}" not in arrays:
                raise ModelFileError(f"{path}: layer {i} ({header}) has no W{i}/B{i} arrays")
            text += [number_text(arrays[f"W{i}"]), number_text(arrays[f"B{i}"])]
    return parse_txt("\n".join(text) + "\n", path)


# ---------------------------------------------------------------- pickle
def _allowed_globals() -> dict:
    """(module, name) → object for everything a toolbox pickle may name: the layer classes under the original's
    module names (modules.linear ...) and ours, and numpy's array reconstruction helpers."""
    allowed = {}
    for cls in (Sequential, Linear, Convolution, SumPool, MaxPool, Flatten, Rect, Tanh, SoftMax, Module):
        original_module = {SumPool: "sumpool", MaxPool: "maxpool", Module: "module"}.get(cls, cls.__name__.lower())
        allowed[("modules." + original_module, cls.__name__)] = cls
        allowed[("modules", cls.__name__)] = cls
        allowed[(cls.__module__, cls.__name__)] = cls
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 pickles of contiguous arrays
    for core in ("numpy.core", "numpy._core"):
        allowed[(core + ".multiarray", "_reconstruct")] = reconstruct
        allowed[(core + ".multiarray", "scalar")] = scalar
        allowed[(core + ".numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _ToolboxUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file, encoding="latin1")  # Python 2 pickles (the shipped .nn files) need latin1
        self.path, self.allowed = path, _allowed_globals()

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise PickleRefusedError(f"{self.path}: the pickle names {module}.{name}, which is not a toolbox layer")


def _read_pickle(path) -> Sequential:
    with open(path, "rb") as f:
        data = f.read()
    try:
        model = _ToolboxUnpickler(io.BytesIO(data), path).load()
    except PickleRefusedError:
        raise
    except Exception as err:  # a damaged pickle can fail in any part of the unpickler
        raise ModelFileError(f"{path}: not a readable pickled model ({type(err).__name__}: {err})") from None
    if not isinstance(model, Sequential) or not all(isinstance(m, Module) for m in model.modules):
        raise ModelFileError(f"{path}: the pickle holds a {type(model).__name__}, not a Sequential of layers")
    for layer in model.modules:  # the original's pickles hold stale forward state: drop it
        layer.clean()
        if isinstance(layer, (Linear, Convolution)):
            layer.W, layer.B = np.asarray(layer.W, np.float64), np.asarray(layer.B, np.float64)
            layer_header(layer)
    return model
