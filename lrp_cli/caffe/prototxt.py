"""Read a deploy .prototxt into a NetParameter, upgraded and filtered the way Caffe builds a net.

- V1 nets (``layers { type: CONVOLUTION ... }``) are upgraded to V2 ``layer`` entries.
- ``input_dim`` (four values per input) is turned into ``input_shape``.
- Layers are filtered with Caffe's include/exclude rules for the TEST phase (the phase the
  demonstrator builds its net in) and the net's own ``state`` level and stages.
"""

from __future__ import annotations

import os
import re

from google.protobuf import text_format

from lrp_cli.caffe import caffe_pb2
from lrp_cli.errors import ModelError
from lrp_cli.files import display_path, open_regular, text_encoding_problem

#: Largest prototxt read: 16 MiB (deploy nets are tens to hundreds of KB; the text parser is slow on more).
MAX_PROTOTXT_BYTES = 16 * 2**20

# V1 LayerType enum name -> V2 type string (Caffe's upgrade table).
V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# *_param fields a V1 layer shares (by name) with LayerParameter.
_V1_PARAM_FIELDS = tuple(
    f.name
    for f in caffe_pb2.V1LayerParameter.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
)

_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")


def read_prototxt(path: str | os.PathLike, phase: int = caffe_pb2.TEST) -> caffe_pb2.NetParameter:
    """Parse a text-format net, upgrade V1 layers and input_dim, and keep the layers of ``phase``."""
    path = os.fspath(path)
    with open_regular(path, "prototxt", ModelError, MAX_PROTOTXT_BYTES) as f:
        try:
            data = f.read()
        except OSError as e:
            raise ModelError(f"{display_path(path)}: cannot read prototxt: {e.strerror or e}") from None
    problem = text_encoding_problem(data)  # protobuf's text parser would report some odd token instead
    if problem:
        advice = ", not text (is it a caffemodel?)" if problem.startswith("binary") else "; save it as UTF-8"
        raise ModelError(f"{display_path(path)}: the prototxt is {problem}{advice}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(f"{display_path(path)}: not a text prototxt ({e.reason} at byte {e.start})") from None
    return parse_prototxt(text, path, phase)


def parse_prototxt(text: str, path: str = "<prototxt>", phase: int = caffe_pb2.TEST) -> caffe_pb2.NetParameter:
    """Like read_prototxt, on the text of a prototxt; ``path`` only names it in errors."""
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as e:
        raise ModelError(f"{path}: {_describe_parse_error(text, e)}") from None
    if len(net.layers) and len(net.layer):
        raise ModelError(f"{path}: mixes V1 'layers' and V2 'layer' entries; use one format")
    if len(net.layers):
        upgrade_v1_layers(net, path)
    upgrade_input_dim(net, path)
    return filter_layers(net, phase, path)


_UNKNOWN_FIELD = re.compile(r'^Message type "(?:caffe\.)?([\w.]+)" has no field named "(\w+)"\.?$')


def _describe_parse_error(text: str, error: text_format.ParseError) -> str:
    """One line: where (line, column, and the layer when the error is inside one) and what.

    An unknown field inside a layer is almost always a field of a Caffe fork; the message names the layer and
    the field, so that the user knows which layer of which net lrp_cli cannot read.
    """
    message = _POSITION_PREFIX.sub("", str(error))
    line = error.GetLine()
    if not line:
        return message
    where = f"line {line}, column {error.GetColumn()}: "
    layer = _enclosing_layer(text, line)
    if layer is None:
        return where + message
    name, kind = layer
    label = f"layer '{name}'" + (f" ({kind})" if kind else "")
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown:
        message_type, field = unknown.groups()
        return (
            f"{where}{label} has the field '{field}' (in {message_type}), which is neither Caffe's nor one of "
            "the fork fields lrp_cli knows"
        )
    return f"{where}{label}: {message}"


_TOKEN = re.compile(r"""#[^\n]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|[{}<>:]|[\w.+-]+|\n""")


def _enclosing_layer(text: str, line: int) -> tuple[str, str] | None:
    """(name, type) of the top-level ``layer``/``layers`` block that spans ``line`` (1-based), or None.

    A small scan of the text format (comments, quoted strings, braces): enough to find blocks and their own
    ``name`` and ``type`` fields also in a file that protobuf rejects. A block left open runs to the end.
    """
    current = 1
    depth = 0
    previous = None  # the identifier before the current token, at depth 0
    block = None  # [first line, name, type] of the layer block being read
    field = None  # 'name' or 'type' when the next value token belongs to that field of the block
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "\n":
            current += 1
            continue
        if token.startswith("#") or token == ":":
            continue
        if token in "{<":
            if depth == 0:
                block = [current, "", ""] if previous in ("layer", "layers") else None
            depth += 1
            field = None
        elif token in "}>":
            depth = max(depth - 1, 0)
            if depth == 0 and block is not None:
                if block[0] <= line <= current:
                    return block[1], block[2]
                block = None
        elif depth == 1 and block is not None and field is not None:
            value = token[1:-1] if token[0] in "\"'" else token
            index = 1 if field == "name" else 2
            if not block[index]:
                block[index] = value if index == 1 or token[0] in "\"'" else V1_TYPE_NAMES.get(value, value)
            field = None
        elif depth == 1 and block is not None:
            field = token if token in ("name", "type") else None
        if depth == 0:
            previous = token
    if block is not None and block[0] <= line:
        return block[1], block[2]
    return None


def upgrade_v1_layers(net: caffe_pb2.NetParameter, path: str = "<prototxt>") -> None:
    """Replace the V1 ``layers`` of ``net`` by equivalent V2 ``layer`` entries (in place)."""
    for index, old in enumerate(net.layers):
        label = f"layer '{old.name}'" if old.name else f"layer #{index}"
        if old.HasField("layer"):
            raise ModelError(f"{path}: {label} is in the V0 format (nested 'layer'), which is not supported")
        type_name = caffe_pb2.V1LayerParameter.LayerType.Name(old.type)
        if type_name not in V1_TYPE_NAMES:
            raise ModelError(f"{path}: {label} has no type")
        new = net.layer.add(name=old.name, type=V1_TYPE_NAMES[type_name])
        new.bottom.extend(old.bottom)
        new.top.extend(old.top)
        new.include.extend(old.include)
        new.exclude.extend(old.exclude)
        new.loss_weight.extend(old.loss_weight)
        new.blobs.extend(old.blobs)
        param_count = max(len(old.param), len(old.blob_share_mode), len(old.blobs_lr), len(old.weight_decay))
        for i in range(param_count):
            spec = new.param.add()
            if i < len(old.param):
                spec.name = old.param[i]
            if i < len(old.blob_share_mode):
                spec.share_mode = old.blob_share_mode[i]
            if i < len(old.blobs_lr):
                spec.lr_mult = old.blobs_lr[i]
            if i < len(old.weight_decay):
                spec.decay_mult = old.weight_decay[i]
        for field in _V1_PARAM_FIELDS:
            if old.HasField(field):
                getattr(new, field).CopyFrom(getattr(old, field))
    del net.layers[:]


def upgrade_input_dim(net: caffe_pb2.NetParameter, path: str = "<prototxt>") -> None:
    """Turn legacy ``input_dim`` values into one ``input_shape`` per ``input`` (in place)."""
    inputs = len(net.input)
    if len(net.input_dim):
        if len(net.input_shape):
            raise ModelError(f"{path}: gives both input_shape and input_dim; use one")
        if len(net.input_dim) != 4 * inputs:
            raise ModelError(
                f"{path}: {len(net.input_dim)} input_dim values for {inputs} input(s); need 4 per input (N, C, H, W)"
            )
        for i in range(inputs):
            net.input_shape.add().dim.extend(net.input_dim[4 * i : 4 * i + 4])
        del net.input_dim[:]
    elif len(net.input_shape) != inputs:
        raise ModelError(f"{path}: {inputs} input(s) but {len(net.input_shape)} input_shape entries; need one each")


def filter_layers(
    net: caffe_pb2.NetParameter, phase: int = caffe_pb2.TEST, path: str = "<prototxt>"
) -> caffe_pb2.NetParameter:
    """A copy of ``net`` with only the layers whose include/exclude rules admit ``phase``."""
    state = caffe_pb2.NetState(phase=phase, level=net.state.level, stage=net.state.stage)
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net)
    filtered.state.phase = phase
    del filtered.layer[:]
    for layer in net.layer:
        if len(layer.include) and len(layer.exclude):
            raise ModelError(f"{path}: layer '{layer.name}' has both include and exclude rules; use one kind")
        if len(layer.include):
            keep = any(state_meets_rule(state, rule) for rule in layer.include)
        else:
            keep = not any(state_meets_rule(state, rule) for rule in layer.exclude)
        if keep:
            filtered.layer.add().CopyFrom(layer)
    return filtered


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's test of one NetStateRule: phase, level range, required and forbidden stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)
