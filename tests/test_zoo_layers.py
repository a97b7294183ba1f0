"""The layers and schema fields the Model Zoo nets need, against slow literal versions and OpenCV.

- Schema: the forks' ``ceil_mode`` and ``shuffle_channel_param`` parse; an unknown field is one line naming the
  prototxt, the layer and the field; ``round_mode`` and ``ceil_mode`` are honoured (output sizes and values equal
  OpenCV's) and a contradiction between them is an error.
- Layers (forward and every relevance mode) against literal loops: pooling with floor rounding, Slice,
  ShuffleChannel, the depthwise convolution (every linear rule against the dense-matrix formulas of
  tests/test_rules.py), ReLU6, Power, and the gates Axpy, Scale with a second bottom and Eltwise PROD.
- A small net with all of them, read from prototxt + caffemodel: conservation of ε-relevance with zero biases,
  formula 11 = score × numerical gradient, a batch equal to one image at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from lrp_cli.caffe import caffe_pb2, read_prototxt
from lrp_cli.errors import ModelError


def relative_error(got, expected) -> float:
    expected = np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert scale > 0, "degenerate test data: the literal result is all zero"
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / scale)


def layer_param(type_name: str, bottoms=("x",), tops=("y",), **fields) -> caffe_pb2.LayerParameter:
    """A LayerParameter from text-format fields, e.g. slice_param='axis: 1 slice_point: 2'."""
    param = caffe_pb2.LayerParameter(name=type_name.lower(), type=type_name, bottom=list(bottoms), top=list(tops))
    for key, value in fields.items():
        text_format.Parse(value, getattr(param, key))
    return param


# ---------------------------------------------------------------------------------------------------------------
# Schema: fork fields and unknown fields


def test_fork_fields_parse(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text(
        'name: "fork"\ninput: "data"\ninput_shape { dim: 1 dim: 6 dim: 8 dim: 8 }\n'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"\n'
        "  pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }\n"
        'layer { name: "shuffle" type: "ShuffleChannel" bottom: "pool" top: "shuffle"\n'
        "  shuffle_channel_param { group: 3 } }\n"
        'layer { name: "pool2" type: "Pooling" bottom: "shuffle" top: "pool2"\n'
        "  pooling_param { pool: AVE kernel_size: 2 round_mode: FLOOR } }\n"
    )
    net = read_prototxt(path)
    assert net.layer[0].pooling_param.HasField("ceil_mode") and not net.layer[0].pooling_param.ceil_mode
    assert net.layer[1].shuffle_channel_param.group == 3
    assert net.layer[2].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert not net.layer[2].pooling_param.HasField("ceil_mode") and net.layer[2].pooling_param.ceil_mode  # default
    # the schema's numbers: the fork's for shuffle_channel_param; ceil_mode moved off BVLC's round_mode (13)
    fields = caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_name
    assert fields["round_mode"].number == 13 and fields["ceil_mode"].number == 1013
    assert caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["shuffle_channel_param"].number == 164


@pytest.mark.parametrize(
    "net, old, new, layer, field",
    [
        ("densenet121", "ceil_mode: false", "ceil_mode: false\n    pad_type: 1", "pool1", "pad_type"),
        ("shufflenet_g3", "shuffle_channel_param {", "shuffle_channel_param {\n    axis: 1", "shuffle2", "axis"),
        ("nin", "num_output: 96", "num_output: 96\n    lr_scale: 2", "conv1", "lr_scale"),  # a V1 net
    ],
)
def test_unknown_fork_field_is_one_line_naming_prototxt_layer_and_field(shared, tmp_path, net, old, new, layer,
                                                                        field):
    text = (shared / "models" / "zoo" / net / "deploy.prototxt").read_text()
    assert old in text
    path = tmp_path / f"{net}.prototxt"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelError) as error:
        read_prototxt(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: line ")
    assert f"layer '{layer}'" in message and f"'{field}'" in message, message


def test_unknown_field_outside_layers_and_bad_values_inside(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "x"\nfoo: 1\n')
    with pytest.raises(ModelError, match=r"line 2, column 1: .*no field named \"foo\"") as error:
        read_prototxt(path)
    assert "layer" not in str(error.value)
    path.write_text('name: "x"\nlayer {\n  name: "p"  # a comment with a brace {\n  type: "Pooling"\n'
                    "  pooling_param { pool: MIN }\n}\n")
    with pytest.raises(ModelError, match=r"line 5, column \d+: layer 'p' \(Pooling\): .*MIN"):
        read_prototxt(path)
