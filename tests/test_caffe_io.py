"""Caffe file readers: schema, prototxt, caffemodel, the joined NetDef and mean files."""

import ast
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, ROOT, SHARED
from google.protobuf import descriptor_pool

from lrp_cli.caffe import caffe_pb2, caffemodel, load_model, read_caffemodel, read_mean, read_prototxt
from lrp_cli.caffe.mean import MeanImage
from lrp_cli.caffe.prototxt import parse_prototxt
from lrp_cli.errors import ModelError

MODELS = REFERENCE / "models"
SQUEEZENET = SHARED / "models" / "squeezenet_v1.1"
# model: (seed, classifier, classifier gain), as in shared/tools/make_reference_models.py
WEIGHT_RECIPES = {"tiny": (3, "ip1", 0.05), "caffenet": (1, "fc8", 0.02), "googlenet": (2, "loss3/classifier", 0.02)}


def params_table(model):
    """(name, type, weight shape, fan_in) rows of shared/reference/models/<model>/params.txt."""
    rows = []
    for line in (MODELS / model / "params.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, kind, shape, fan_in = line.split()
            rows.append((name, kind, tuple(int(d) for d in shape.split("x")), int(fan_in)))
    return rows


def drawn_weights(model, first_layers=None):
    """The reference weights, drawn again exactly as make_reference_models.py draws them."""
    seed, classifier, gain = WEIGHT_RECIPES[model]
    rng = np.random.default_rng(seed)
    weights = {}
    for name, _kind, shape, fan_in in params_table(model)[:first_layers]:
        std = math.sqrt(2.0 / fan_in) * (gain if name == classifier else 1.0)
        w = (rng.standard_normal(shape) * std).astype(np.float32)
        b = (0.01 * rng.standard_normal(shape[0]) + 0.05).astype(np.float32)
        weights[name] = (w, b)
    return weights


def caffe_layer_names(model):
    """Caffe's layer list for the model without the Split layers Caffe inserts itself."""
    rows = [line.split() for line in (MODELS / f"layer_index_{model}.txt").read_text().splitlines()]
    return [row[1] for row in rows if row and not row[0].startswith("#") and row[2] != "Split"]


def slow_protobuf_blobs(path):
    """Ground truth by plain protobuf: layer name -> float32 arrays."""
    net = caffe_pb2.NetParameter.FromString(Path(path).read_bytes())
    return {
        layer.name: [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in layer.blobs]
        for layer in net.layer
    }


# ---------------------------------------------------------------- schema


def test_generated_module_is_up_to_date_with_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}", "proto/caffe.proto"],
        check=True,
        cwd=ROOT,
    )
    generated = ast.parse((tmp_path / "caffe_pb2.py").read_text())
    calls = [
        node
        for node in ast.walk(generated)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"
    ]
    assert len(calls) == 1
    # Load the fresh descriptor in a private pool: the runtime normalises what it re-serialises
    # (e.g. float defaults), so compare like with like.
    fresh = descriptor_pool.DescriptorPool().AddSerializedFile(ast.literal_eval(calls[0].args[0]))
    assert fresh.serialized_pb == caffe_pb2.DESCRIPTOR.serialized_pb, (
        "lrp_cli/caffe/caffe_pb2.py is out of date: run "
        "python -m grpc_tools.protoc -Iproto --python_out=lrp_cli/caffe proto/caffe.proto"
    )


def test_schema_field_numbers_match_caffe():
    fields = {
        "NetParameter": {
            "name": 1, "layers": 2, "input": 3, "input_dim": 4, "state": 6, "input_shape": 8, "layer": 100,
        },
        "LayerParameter": {
            "blobs": 7, "include": 8, "exclude": 9, "phase": 10, "transform_param": 100, "loss_param": 101,
            "convolution_param": 106, "inner_product_param": 117, "lrn_param": 118, "pooling_param": 121,
            "batch_norm_param": 139, "scale_param": 142, "input_param": 143, "clip_param": 148,
        },
        "V1LayerParameter": {"layer": 1, "bottom": 2, "top": 3, "name": 4, "type": 5, "blobs": 6, "blobs_lr": 7},
        "BlobProto": {"num": 1, "width": 4, "data": 5, "shape": 7, "double_data": 8},
    }  # fmt: skip
    for message, numbers in fields.items():
        by_name = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name
        assert {name: by_name[name].number for name in numbers} == numbers
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].GetOptions().packed
    assert caffe_pb2.V1LayerParameter.INNER_PRODUCT == 14 and caffe_pb2.V1LayerParameter.ELTWISE == 25
    assert caffe_pb2.TEST == 1


# ---------------------------------------------------------------- reference models


@pytest.mark.parametrize(
    "model, prototxt, caffemodel, input_shape",
    [
        ("tiny", "deploy.prototxt", "tiny_seed3.caffemodel", (1, 3, 32, 32)),
        ("googlenet", "deploy1.prototxt", "googlenet_seed2.caffemodel", (1, 3, 224, 224)),
    ],
)
def test_reference_model_loads_with_the_drawn_weights(request, model, prototxt, caffemodel, input_shape):
    models_dir = request.getfixturevalue(f"{model}_model_dir")
    net = load_model(MODELS / model / prototxt, models_dir / model / caffemodel)
    assert [(i.name, i.shape) for i in net.inputs] == [("data", input_shape)]
    assert [layer.name for layer in net.layers] == caffe_layer_names(model)
    with_blobs = [(layer.name, layer.type, layer.blobs[0].shape) for layer in net.layers if layer.blobs]
    assert with_blobs == [(name, kind, shape) for name, kind, shape, _ in params_table(model)]
    expected = drawn_weights(model)
    for layer in net.layers:
        if layer.blobs:
            weights, bias = expected[layer.name]
            assert len(layer.blobs) == 2
            assert layer.blobs[0].dtype == np.float32
            np.testing.assert_array_equal(layer.blobs[0], weights)
            np.testing.assert_array_equal(layer.blobs[1], bias)


def test_caffenet_loads(caffenet_model_dir):
    started = time.perf_counter()
    net = load_model(
        MODELS / "caffenet" / "deploy.prototxt", caffenet_model_dir / "caffenet" / "caffenet_seed1.caffemodel"
    )
    print(f"CaffeNet load_model: {time.perf_counter() - started:.2f} s")
    assert net.name == "CaffeNet"
    assert [(i.name, i.shape) for i in net.inputs] == [("data", (10, 3, 227, 227))]
    assert [layer.name for layer in net.layers] == caffe_layer_names("caffenet")
    blobs = {layer.name: layer.blobs for layer in net.layers if layer.blobs}
    assert {name: b[0].shape for name, b in blobs.items()} == {n: s for n, _, s, _ in params_table("caffenet")}
    assert {name: b[1].shape for name, b in blobs.items()} == {n: s[:1] for n, _, s, _ in params_table("caffenet")}
    weights, bias = drawn_weights("caffenet", first_layers=1)["conv1"]
    np.testing.assert_array_equal(blobs["conv1"][0], weights)
    np.testing.assert_array_equal(blobs["conv1"][1], bias)
    fc8 = next(layer for layer in net.layers if layer.name == "fc8")
    assert fc8.type == "InnerProduct" and fc8.bottoms == ("fc7",) and fc8.param.inner_product_param.num_output == 1000
    assert blobs["fc8"][0].flags.c_contiguous and blobs["fc8"][0].flags.aligned and blobs["fc8"][0].flags.writeable


def test_squeezenet_input_layer_and_real_weights():
    caffemodel = SQUEEZENET / "squeezenet_v1.1.caffemodel"
    net = load_model(SQUEEZENET / "deploy.prototxt", caffemodel)
    assert [(i.name, i.shape) for i in net.inputs] == [("data", (1, 3, 227, 227))]
    assert net.layers[0].name == "data" and net.layers[0].type == "Input" and net.layers[0].tops == ("data",)
    convolutions = [layer for layer in net.layers if layer.type == "Convolution"]
    assert len(convolutions) == 26 and all(len(layer.blobs) == 2 for layer in convolutions)
    shapes = {layer.name: layer.blobs[0].shape for layer in convolutions}
    assert shapes["conv1"] == (64, 3, 3, 3)
    assert shapes["fire2/expand3x3"] == (64, 16, 3, 3)
    assert shapes["conv10"] == (1000, 512, 1, 1)
    truth = slow_protobuf_blobs(caffemodel)
    for layer in convolutions:
        for blob, expected in zip(layer.blobs, truth[layer.name], strict=True):
            np.testing.assert_array_equal(blob, expected)
    # Caffe's automatic Split layers are in the caffemodel but not in the prototxt: ignored.
    assert "fire2/squeeze1x1_fire2/relu_squeeze1x1_0_split" in read_caffemodel(caffemodel)
    assert all(layer.type != "Split" for layer in net.layers)


# ---------------------------------------------------------------- V1 format and legacy encodings

TINY_V1_PROTOTXT = """
name: "TinyNetV1"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 32
input_dim: 32
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 8 kernel_size: 5 stride: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "conv2" type: CONVOLUTION bottom: "pool1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 group: 2 } }
layers { name: "relu2" type: RELU bottom: "conv2" top: "conv2" }
layers { name: "norm2" type: LRN bottom: "conv2" top: "norm2"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layers { name: "pool2" type: POOLING bottom: "norm2" top: "pool2"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 10 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" include { phase: TRAIN } }
layers { name: "prob" type: SOFTMAX bottom: "ip1" top: "prob" }
"""


def _legacy_blob(array, unpacked=False, as_double=False):
    """BlobProto bytes with the legacy num/channels/height/width shape (1-padded to 4-D)."""
    dims = (1,) * (4 - array.ndim) + array.shape
    header = caffe_pb2.BlobProto(num=dims[0], channels=dims[1], height=dims[2], width=dims[3]).SerializeToString()
    if as_double:
        return header + caffe_pb2.BlobProto(double_data=array.ravel().astype(np.float64)).SerializeToString()
    if unpacked:  # one fixed32 field (number 5, wire type 5) per value, as very old writers did
        return header + b"".join(b"\x2d" + struct.pack("<f", v) for v in array.ravel())
    return header + caffe_pb2.BlobProto(data=array.ravel()).SerializeToString()


def write_tiny_v1_caffemodel(path, weights):
    net = caffe_pb2.NetParameter(name="TinyNetV1")
    encodings = {"conv1": {}, "conv2": {"unpacked": True}, "ip1": {"as_double": True}}
    for name, (w, b) in weights.items():
        layer = net.layers.add(name=name)
        layer.type = (
            caffe_pb2.V1LayerParameter.INNER_PRODUCT if name == "ip1" else caffe_pb2.V1LayerParameter.CONVOLUTION
        )
        for array in (w, b):
            layer.blobs.add().MergeFromString(_legacy_blob(array, **encodings[name]))
    path.write_bytes(net.SerializeToString())


def test_v1_prototxt_and_caffemodel_load_like_v2(tmp_path, tiny_model_dir):
    prototxt, caffemodel = tmp_path / "v1.prototxt", tmp_path / "v1.caffemodel"
    prototxt.write_text(TINY_V1_PROTOTXT)
    weights = drawn_weights("tiny")
    write_tiny_v1_caffemodel(caffemodel, weights)
    v1 = load_model(prototxt, caffemodel)
    v2 = load_model(MODELS / "tiny" / "deploy.prototxt", tiny_model_dir / "tiny" / "tiny_seed3.caffemodel")
    assert [(i.name, i.shape) for i in v1.inputs] == [("data", (1, 3, 32, 32))]
    assert [(x.name, x.type, x.bottoms, x.tops) for x in v1.layers] == [
        (x.name, x.type, x.bottoms, x.tops) for x in v2.layers
    ]
    for a, b in zip(v1.layers, v2.layers, strict=True):
        assert len(a.blobs) == len(b.blobs)
        for blob_a, blob_b in zip(a.blobs, b.blobs, strict=True):
            assert blob_a.shape == blob_b.shape and blob_a.dtype == np.float32  # ip1 1x1x10x576 -> 10x576
            np.testing.assert_array_equal(blob_a, blob_b)
        assert a.param.convolution_param == b.param.convolution_param
        assert a.param.pooling_param == b.param.pooling_param
        assert a.param.lrn_param == b.param.lrn_param
    conv1 = v1.layers[0].param
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(1, 1), (2, 0)]


def test_caffemodel_v1_raw_blobs_keep_legacy_shape(tmp_path):
    path = tmp_path / "legacy.caffemodel"
    write_tiny_v1_caffemodel(path, drawn_weights("tiny"))
    blobs = read_caffemodel(path)
    assert [b.shape for b in blobs["ip1"]] == [(1, 1, 10, 576), (1, 1, 1, 10)]
    assert [b.shape for b in blobs["conv2"]] == [(16, 4, 3, 3), (1, 1, 1, 16)]


def test_v1_upgrade_type_names():
    net = read_prototxt_text(
        'layers { name: "a" type: ELTWISE } layers { name: "b" type: SPLIT } '
        'layers { name: "c" type: DATA } layers { name: "d" type: TANH } layers { name: "e" type: SIGMOID } '
        'layers { name: "f" type: FLATTEN } layers { name: "g" type: CONCAT eltwise_param { operation: MAX } }'
    )
    assert [(x.name, x.type) for x in net.layer] == [
        ("a", "Eltwise"), ("b", "Split"), ("c", "Data"), ("d", "TanH"), ("e", "Sigmoid"), ("f", "Flatten"),
        ("g", "Concat"),
    ]  # fmt: skip
    assert len(net.layers) == 0
    assert net.layer[6].eltwise_param.operation == caffe_pb2.EltwiseParameter.MAX


def read_prototxt_text(text):
    return parse_prototxt(text, "test.prototxt")


# ---------------------------------------------------------------- inputs and phase filtering

CONV_LAYER = (
    'layer { name: "c" type: "Convolution" bottom: "%s" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }'
)


def _conv_weights(path, in_channels):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="c", type="Convolution")
    layer.blobs.add(shape=caffe_pb2.BlobShape(dim=[2, in_channels, 1, 1]), data=np.arange(2 * in_channels))
    layer.blobs.add(shape=caffe_pb2.BlobShape(dim=[2]), data=[0.5, -0.5])
    path.write_bytes(net.SerializeToString())
    return path


@pytest.mark.parametrize(
    "header, expected",
    [
        ('input: "img" input_shape { dim: 1 dim: 3 dim: 8 dim: 6 }', [("img", (1, 3, 8, 6))]),
        ('input: "img" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 6', [("img", (1, 3, 8, 6))]),
        (
            'layer { name: "in" type: "Input" top: "img" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 6 } } }',
            [("img", (1, 3, 8, 6))],
        ),
        (
            'input: "img" input_shape { dim: 1 dim: 3 dim: 8 dim: 6 } '
            'input: "aux" input_shape { dim: 1 dim: 5 } '
            'layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 4 } } }',
            [("img", (1, 3, 8, 6)), ("aux", (1, 5)), ("x", (2, 4)), ("y", (2, 4))],
        ),
    ],
)
def test_input_declarations(tmp_path, header, expected):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(header + "\n" + CONV_LAYER % "img")
    net = load_model(prototxt, _conv_weights(tmp_path / "net.caffemodel", 3))
    assert [(i.name, i.shape) for i in net.inputs] == expected
    assert [x.type for x in net.layers] == (["Input"] if "Input" in header else []) + ["Convolution"]
    np.testing.assert_array_equal(net.layers[-1].blobs[1], [0.5, -0.5])


@pytest.mark.parametrize(
    "header, problem",
    [
        ('input: "img" input_dim: 1 input_dim: 3 input_dim: 8', "3 input_dim values for 1 input"),
        ('input: "img"', "1 input(s) but 0 input_shape"),
        ('input: "a" input: "b" input_shape { dim: 1 }', "2 input(s) but 1 input_shape"),
        (
            'layer { name: "in" type: "Input" top: "x" top: "y" top: "z" '
            "input_param { shape { dim: 1 } shape { dim: 2 } } }",
            "Input layer 'in' has 3 top(s) but 2 input_param shape(s)",
        ),
    ],
)
def test_bad_input_declarations(tmp_path, header, problem):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(header)
    with pytest.raises(ModelError, match="net.prototxt") as error:
        load_model(prototxt, _conv_weights(tmp_path / "w.caffemodel", 3))
    assert problem in str(error.value)


def test_test_phase_filtering():
    net = read_prototxt_text(
        """
        state { level: 2 stage: "deploy" }
        layer { name: "train_only" type: "ReLU" include { phase: TRAIN } }
        layer { name: "test_only" type: "ReLU" include { phase: TEST } }
        layer { name: "not_in_test" type: "ReLU" exclude { phase: TEST } }
        layer { name: "always" type: "ReLU" }
        layer { name: "either" type: "ReLU" include { phase: TRAIN } include { stage: "deploy" } }
        layer { name: "needs_two_stages" type: "ReLU" include { stage: "deploy" stage: "extra" } }
        layer { name: "not_deploy" type: "ReLU" include { not_stage: "deploy" } }
        layer { name: "level_ok" type: "ReLU" include { min_level: 1 max_level: 2 } }
        layer { name: "level_low" type: "ReLU" include { min_level: 3 } }
        layer { name: "excluded_by_level" type: "ReLU" exclude { max_level: 5 } }
        """
    )
    assert [x.name for x in net.layer] == ["test_only", "always", "either", "level_ok"]
    assert net.state.phase == caffe_pb2.TEST


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(ModelError, match="layer 'x' has both include and exclude"):
        read_prototxt_text('layer { name: "x" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN } }')


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text, line",
    [
        ('name: "x"\nlayer {\n  name: "a"\n  bottom: data\n  type: "ReLU"\n}\n', "line 4"),
        ('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom: "data"\n', "line 5"),  # unclosed
    ],
)
def test_prototxt_syntax_error_names_file_and_line(tmp_path, text, line):
    path = tmp_path / "broken.prototxt"
    path.write_text(text)
    with pytest.raises(ModelError) as error:
        read_prototxt(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {line}, column ") and "\n" not in message


def test_prototxt_unknown_field_names_field_and_line(tmp_path):
    path = tmp_path / "unknown.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  relu_parm { negative_slope: 0.1 }\n}\n')
    with pytest.raises(ModelError) as error:
        read_prototxt(path)
    message = str(error.value)
    assert str(path) in message and "line 5" in message and "relu_parm" in message


def test_missing_prototxt(tmp_path):
    with pytest.raises(ModelError, match="cannot read prototxt"):
        read_prototxt(tmp_path / "absent.prototxt")


def test_truncated_caffemodel_names_file_and_layer(tmp_path, tiny_model_dir):
    data = (tiny_model_dir / "tiny" / "tiny_seed3.caffemodel").read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelError) as error:
        read_caffemodel(path)
    message = str(error.value)
    assert message.startswith(
        f"{path}: truncated or corrupt caffemodel, in layer 'ip1': the file ends 1000 bytes early"
    )
    path.write_bytes(data[:8])  # inside the net name, before any layer
    with pytest.raises(ModelError, match="cut.caffemodel: truncated or corrupt caffemodel, after 0 layer"):
        read_caffemodel(path)


def test_corrupt_blob_names_layer(tmp_path):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="conv9", type="Convolution")
    layer.blobs.add(shape=caffe_pb2.BlobShape(dim=[2, 3]), data=[1.0, 2.0])  # 6 declared, 2 stored
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(
        ModelError, match=r"bad\.caffemodel: .*in layer 'conv9': blob 0 declares shape \(2, 3\) but holds 2 values"
    ):
        read_caffemodel(path)


@pytest.mark.parametrize("content", [b"", b"name: 'not a binary net'\n", b"\xff" * 64])
def test_not_a_caffemodel(tmp_path, content):
    path = tmp_path / "x.caffemodel"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="x.caffemodel"):
        read_caffemodel(path)


def test_caffemodel_protobuf_fast_path_matches_plain_protobuf(googlenet_model_dir):
    path = googlenet_model_dir / "googlenet" / "googlenet_seed2.caffemodel"
    fast, slow = read_caffemodel(path), slow_protobuf_blobs(path)
    assert fast.keys() == slow.keys()
    for name in slow:
        for a, b in zip(fast[name], slow[name], strict=True):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def _one_layer_caffemodel(path, **blob_fields):
    net = caffe_pb2.NetParameter()
    net.layer.add(name="fc7", type="InnerProduct").blobs.add(**blob_fields)
    path.write_bytes(net.SerializeToString())
    return path


def test_a_caffemodel_above_caffes_2_gib_limit_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "sparse.caffemodel"
    with open(path, "wb") as f:
        f.truncate(100 * 2**30)  # truncate -s 100G: no data blocks
    monkeypatch.setattr(caffemodel.mmap, "mmap", None)  # reading would fail with a TypeError
    with pytest.raises(ModelError, match=r"sparse\.caffemodel: caffemodel is 100\.0 GiB, larger than Caffe's protobuf "
                       r"limit for a caffemodel \(2\.0 GiB\)$"):
        read_caffemodel(path)


def test_zero_padding_after_the_layers_is_found_at_its_first_byte(tmp_path, tiny_model_dir):
    path = tmp_path / "padded.caffemodel"
    data = (tiny_model_dir / "tiny" / "tiny_seed3.caffemodel").read_bytes()
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(2**31 - 1)  # the largest size Caffe reads, mostly a hole
    start = time.process_time()
    with pytest.raises(ModelError, match=r"padded\.caffemodel: truncated or corrupt caffemodel, after 3 layer\(s\): "
                       r"field number 0 \(zero bytes where a field should begin\)$"):
        read_caffemodel(path)
    assert time.process_time() - start < 1.0  # CPU seconds: the 2 GiB hole is never read


@pytest.mark.parametrize(
    "fields, count",
    [
        ({"shape": caffe_pb2.BlobShape(dim=[2, 3]), "data": [1, 2, float("nan"), 4, 5, 6]}, 1),
        ({"shape": caffe_pb2.BlobShape(dim=[3]), "data": [float("inf"), 0, float("-inf")]}, 2),
        ({"shape": caffe_pb2.BlobShape(dim=[2]), "double_data": [1e300, 1.0]}, 1),  # beyond float32
        ({"num": 1, "channels": 1, "height": 1, "width": 2, "data": [0.5, float("nan")]}, 1),
    ],
    ids=["nan", "inf", "double-overflow", "legacy-shape-nan"],
)
def test_non_finite_weights_are_a_model_error_naming_file_and_layer(tmp_path, fields, count):
    path = _one_layer_caffemodel(tmp_path / "w.caffemodel", **fields)
    with pytest.raises(ModelError, match=rf"w\.caffemodel: layer 'fc7' blob 0 holds {count} non-finite weight\(s\) "
                       r"\(NaN, ±Inf or beyond the float32 range\)$"):
        read_caffemodel(path)


def test_a_huge_declared_shape_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    path = _one_layer_caffemodel(tmp_path / "h.caffemodel", shape=caffe_pb2.BlobShape(dim=[2**32, 2**32]), data=[1])
    real_empty = np.empty
    monkeypatch.setattr(np, "empty", lambda n, *a, **k: real_empty(n, *a, **k) if np.prod(n) < 100 else 1 / 0)
    with pytest.raises(ModelError, match=r"h\.caffemodel: truncated or corrupt caffemodel, in layer 'fc7': blob 0 "
                       r"declares shape \(4294967296, 4294967296\) but holds 1 values$"):
        read_caffemodel(path)


def test_double_payloads_are_converted_in_chunks_exactly(tmp_path, monkeypatch):
    values = np.random.default_rng(4).standard_normal(1001) * 100
    path = _one_layer_caffemodel(tmp_path / "d.caffemodel", shape=caffe_pb2.BlobShape(dim=[7, 143]),
                                 double_data=values.tolist())
    monkeypatch.setattr(caffemodel, "_COPY_CHUNK", 64)  # 8 doubles per read: many chunks and a short last one
    (blob,) = read_caffemodel(path)["fc7"]
    assert blob.dtype == np.float32 and blob.shape == (7, 143)
    np.testing.assert_array_equal(blob.reshape(-1), values.astype(np.float32))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_a_caffemodel_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = tmp_path / "m.caffemodel"
    {"fifo": lambda: os.mkfifo(path), "dev-zero": lambda: path.symlink_to("/dev/zero"), "directory": path.mkdir}[kind]()
    with pytest.raises(ModelError, match=r"m\.caffemodel: cannot read caffemodel: not a regular file \(.*\)$"):
        read_caffemodel(path)


def test_loading_caffenet_takes_about_its_weights_in_memory_not_twice_the_file(caffenet_model_dir):
    """Peak RSS of a fresh process reading the 233 MB CaffeNet: the weights plus a little (it was 2x the file)."""
    path = caffenet_model_dir / "caffenet" / "caffenet_seed1.caffemodel"
    script = (
        "import resource, sys; from lrp_cli.caffe import read_caffemodel; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; w = read_caffemodel(sys.argv[1]); "
        "print(before * 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "
        "sum(b.nbytes for v in w.values() for b in v))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    before, peak, weights = (int(v) for v in done.stdout.split())
    assert weights > 0.99 * path.stat().st_size
    assert peak - before < weights + 40 * 2**20, (peak - before, weights)


def _tiny_prototxt_with(tmp_path, old, new):
    text = (MODELS / "tiny" / "deploy.prototxt").read_text()
    assert old in text
    path = tmp_path / "changed.prototxt"
    path.write_text(text.replace(old, new, 1))
    return path


def test_blob_shape_mismatch_names_layer_and_both_shapes(tmp_path, tiny_model_dir):
    prototxt = _tiny_prototxt_with(tmp_path, "num_output: 16", "num_output: 12")
    with pytest.raises(ModelError) as error:
        load_model(prototxt, tiny_model_dir / "tiny" / "tiny_seed3.caffemodel")
    message = str(error.value)
    assert "tiny_seed3.caffemodel" in message and "layer 'conv2' (Convolution)" in message
    assert "(16, 4, 3, 3)" in message and "(12, 4, 3, 3)" in message


def test_input_channel_mismatch_is_caught(tmp_path, tiny_model_dir):
    prototxt = _tiny_prototxt_with(tmp_path, "group: 2", "group: 4")
    with pytest.raises(ModelError, match=r"layer 'conv2'.*\(16, 4, 3, 3\).*\(16, 2, 3, 3\)"):
        load_model(prototxt, tiny_model_dir / "tiny" / "tiny_seed3.caffemodel")


def test_bias_term_mismatch(tmp_path, tiny_model_dir):
    prototxt = _tiny_prototxt_with(tmp_path, "num_output: 10", "num_output: 10\n    bias_term: false")
    with pytest.raises(ModelError, match=r"layer 'ip1' \(InnerProduct\) has 2 blob\(s\), the prototxt implies 1"):
        load_model(prototxt, tiny_model_dir / "tiny" / "tiny_seed3.caffemodel")


def test_missing_blobs_name_the_layer(tmp_path, tiny_model_dir):
    prototxt = _tiny_prototxt_with(tmp_path, 'name: "ip1"', 'name: "ip_renamed"')
    with pytest.raises(ModelError, match=r"has no weights for layer 'ip_renamed' \(InnerProduct\), which needs 2"):
        load_model(prototxt, tiny_model_dir / "tiny" / "tiny_seed3.caffemodel")


def test_checked_layer_types(tmp_path):
    net = caffe_pb2.NetParameter()

    def add(name, *shapes):
        layer = net.layer.add(name=name)
        for shape in shapes:
            layer.blobs.add(shape=caffe_pb2.BlobShape(dim=shape), data=np.ones(int(np.prod(shape))))

    add("ip", [6, 4]), add("bn", [4], [4], [1]), add("sc", [4], [4]), add("pr", [4])
    caffemodel = tmp_path / "w.caffemodel"
    caffemodel.write_bytes(net.SerializeToString())
    layers = """
        input: "x" input_shape { dim: 1 dim: 4 dim: 3 dim: 3 }
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }
        layer { name: "sc" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: %s } }
        layer { name: "pr" type: "PReLU" bottom: "x" top: "x" }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
                inner_product_param { num_output: 4 transpose: true bias_term: false } }
    """
    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text(layers % "true")
    loaded = load_model(prototxt, caffemodel)
    assert [len(x.blobs) for x in loaded.layers] == [3, 2, 1, 1]
    prototxt.write_text(layers % "false")
    with pytest.raises(ModelError, match="layer 'sc' \\(Scale\\) has 2 blob"):
        load_model(prototxt, caffemodel)


# ---------------------------------------------------------------- mean files

# A 3 x 2 x 3 (C x H x W) mean with all values distinct, B,G,R planes.
MEAN_BGR = np.arange(18, dtype=np.float64).reshape(3, 2, 3) * 1.5 + 100


def _mean_binaryproto(path, planes, legacy=False):
    blob = caffe_pb2.BlobProto(data=planes.ravel())
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = 1, *planes.shape
    else:
        blob.shape.dim.extend((1, *planes.shape))
    path.write_bytes(blob.SerializeToString())
    return path


def test_text_mean_is_indexed_as_written(tmp_path):
    channels, height, width = MEAN_BGR.shape
    numbers = [channels, height, width]
    for plane in MEAN_BGR:  # column by column: outer loop over columns, inner over rows
        numbers += [plane[r, c] for c in range(width) for r in range(height)]
    path = tmp_path / "mean.txt"
    path.write_text(" ".join(f"{v:g}" for v in numbers[:10]) + "\n" + "\n".join(f"{v:g}" for v in numbers[10:]))
    mean = read_mean(path, 0)
    assert isinstance(mean, MeanImage) and (mean.height, mean.width) == (2, 3)
    assert mean.flat.dtype == np.float64 and mean.flat.shape == (3, 6)
    np.testing.assert_array_equal(mean.flat.ravel(), numbers[3:])
    for b in range(3):
        for r in range(height):
            for c in range(width):
                assert mean.flat[b, r + c * height] == MEAN_BGR[b, r, c]


@pytest.mark.parametrize("legacy", [False, True])
def test_binaryproto_mean_is_transposed_like_the_original(tmp_path, legacy):
    mean = read_mean(_mean_binaryproto(tmp_path / "m.binaryproto", MEAN_BGR, legacy), 1)
    height, width = 2, 3
    assert (mean.height, mean.width) == (height, width)
    np.testing.assert_array_equal(mean.flat, MEAN_BGR.reshape(3, 6))  # planes in row-major storage order
    for b in range(3):
        for r in range(height):
            for c in range(width):
                k = r + c * height  # the original's column-major index into row-major storage
                assert mean.flat[b, k] == MEAN_BGR[b, k // width, k % width]
    assert mean.flat[0, 1 + 0 * height] != MEAN_BGR[0, 1, 0]  # (row 1, col 0) reads stored (0, 1)


def test_binaryproto_mean_rgb_planes(tmp_path):
    rgb = MEAN_BGR[::-1]
    mean = read_mean(_mean_binaryproto(tmp_path / "m.binaryproto", rgb), 2)
    np.testing.assert_array_equal(mean.flat, MEAN_BGR.reshape(3, 6))


def test_real_imagenet_mean(tmp_path):
    blob = caffe_pb2.BlobProto.FromString((MODELS / "imagenet_mean_bgr.binaryproto").read_bytes())
    planes = np.array(blob.data, np.float64).reshape(3, 256, 256)
    mean = read_mean(MODELS / "imagenet_mean_bgr.binaryproto", 1)
    # spec §4.6: in the centre crop, net (h, w) subtracts M[c][14 + w][14 + h]
    h, w = 5, 200
    assert mean.flat[0, (14 + h) + (14 + w) * 256] == planes[0, 14 + w, 14 + h]


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_npy_mean_is_not_transposed(tmp_path, mode):
    path = tmp_path / "mean.npy"
    np.save(path, MEAN_BGR.astype(np.float32))
    mean = read_mean(path, mode)
    assert (mean.height, mean.width) == (2, 3)
    for b in range(3):
        for r in range(2):
            for c in range(3):
                assert mean.flat[b, r + c * 2] == MEAN_BGR[b, r, c]


@pytest.mark.parametrize(
    "mode, content, problem",
    [
        (0, "3 2 2 1 2 3", "declares 3x2x2 = 12 values but holds 3"),
        (0, "1 1 1 5", "1 channel(s); need 3"),
        (0, "3 0 4", "size 0 x 4 is empty"),
        (0, "3 1 1 a b c", "non-number"),
        (1, "3 1 1 1 2 3", "binaryproto"),
        (3, "", "unknown mean file mode 3"),
    ],
)
def test_bad_mean_files(tmp_path, mode, content, problem):
    path = tmp_path / "mean.bad"
    path.write_text(content)
    with pytest.raises(ModelError, match="mean.bad") as error:
        read_mean(path, mode)
    assert problem in str(error.value)


def test_binaryproto_mean_with_wrong_channels(tmp_path):
    path = _mean_binaryproto(tmp_path / "gray.binaryproto", np.ones((1, 4, 4)))
    with pytest.raises(ModelError, match="gray.binaryproto: mean image has 1 channel"):
        read_mean(path, 1)


def _save_npy(path, array):
    with open(path, "wb") as f:  # np.save(path) would append .npy to the name
        np.save(f, array)


def _npy_with_header_shape(path, shape):
    """A .npy file whose header declares ``shape`` (float32) but holds a single value."""
    _save_npy(path, np.zeros(1, np.float32))
    data = path.read_bytes()
    length = int.from_bytes(data[8:10], "little")
    header = data[10 : 10 + length].replace(b"(1,)", repr(shape).encode()).rstrip(b" \n")
    header = header.ljust(((len(header) + 11) // 64 + 1) * 64 - 11) + b"\n"
    path.write_bytes(data[:8] + len(header).to_bytes(2, "little") + header + data[10 + length :])
    return path


@pytest.mark.parametrize(
    "mode, make, problem",
    [
        (0, lambda p: p.write_text("3 1 1 104 nan 123"), "the mean holds 1 non-finite value(s)"),
        (0, lambda p: p.write_text("3 1 2 104 inf 123 -inf 1 2"), "the mean holds 2 non-finite value(s)"),
        (0, lambda p: p.write_text("3 1 1 104 1e39 123"), "the mean holds 1 non-finite value(s)"),  # > float32
        (1, lambda p: _mean_binaryproto(p, np.full((3, 2, 2), np.inf)), "the mean holds 12 non-finite value(s)"),
        (2, lambda p: _save_npy(p, np.full((3, 2, 2), np.nan)), "the mean holds 12 non-finite value(s)"),
    ],
    ids=["text-nan", "text-inf", "text-beyond-float32", "binaryproto-inf", "npy-nan"],
)
def test_non_finite_means_are_a_model_error_naming_the_file(tmp_path, mode, make, problem):
    path = tmp_path / "m.mean"
    make(path)
    with pytest.raises(ModelError) as error:
        read_mean(path, mode)
    assert str(error.value) == f"{path}: {problem} (NaN, ±Inf or beyond the float32 range)"


@pytest.mark.parametrize(
    "mode, make, problem",
    [
        (1, lambda p: _npy_with_header_shape(p, (3, 10**6, 10**6)),
         "mean image 3 x 1000000 x 1000000 would take 21.8 TiB, above the 256.0 MiB memory budget for one array"),
        (0, lambda p: _npy_with_header_shape(p, (1, 3, 10**6, 10**6)),
         "mean image 3 x 1000000 x 1000000 would take 21.8 TiB, above the 256.0 MiB memory budget for one array"),
        (0, lambda p: p.write_text("3 1000000 1000000 1 2 3"),
         "mean image 3 x 1000000 x 1000000 would take 21.8 TiB, above the 256.0 MiB memory budget for one array"),
        (1, lambda p: p.write_bytes(caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[1, 3, 10**6, 10**6]),
                                                         data=[1.0]).SerializeToString()),
         "mean image 3 x 1000000 x 1000000 would take 21.8 TiB, above the 256.0 MiB memory budget for one array"),
        (1, lambda p: _npy_with_header_shape(p, (3, 100, 100)),
         "truncated .npy array: the header declares 120000 bytes of data, the file holds 4"),
        (0, lambda p: p.write_text("3 1 1 " + "7 " * 100_000), "text mean file declares 3x1x1 = 3 values but holds "
                                                              "far more text"),
        (0, lambda p: os.mkfifo(p), "cannot read mean file: not a regular file (a named pipe (FIFO))"),
        (1, lambda p: p.symlink_to("/dev/urandom"), "cannot read mean file: not a regular file (a character device)"),
        (1, lambda p: open(p, "wb").truncate(100 * 2**30),  # noqa: SIM115 - closed when collected
         "mean file is 100.0 GiB, larger than the most a mean file can be (64.0 MiB)"),
        (2, lambda p: _save_npy(p, np.zeros((3, 2, 2), np.complex64)),
         "holds complex numbers (dtype complex64), not real numbers"),
        (0, lambda p: p.write_text("3 1 1 104 117 1,5"), "text mean file holds a non-number: '1,5'"),
    ],
    ids=["npy-huge", "npy-huge-4d", "text-huge", "binaryproto-huge", "npy-truncated", "text-too-long", "fifo",
         "dev-urandom", "sparse-100G", "npy-complex", "text-comma"],
)
def test_mean_sizes_are_checked_before_allocating(tmp_path, monkeypatch, mode, make, problem):
    path = tmp_path / "m.mean"
    make(path)
    real_empty = np.empty
    monkeypatch.setattr(np, "empty", lambda n, *a, **k: real_empty(n, *a, **k) if np.prod(n) < 10**6 else 1 / 0)
    with pytest.raises(ModelError) as error:
        read_mean(path, mode)
    assert str(error.value) == f"{path}: {problem}"


def test_a_constant_mean_spreads_over_any_canvas_without_memory(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("3 1 1 104 117 123")
    mean = read_mean(path, 0).canvas(100_000, 100_000)
    assert (mean.height, mean.width) == (100_000, 100_000) and mean.flat.shape == (3, 10**10)
    assert mean.flat.base is not None and mean.flat.strides[1] == 0  # a broadcast view of the three values
    assert mean.flat[:, 12345678].tolist() == [104, 117, 123]


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_text(MODELS.joinpath("tiny", "deploy.prototxt").read_text(), encoding="utf-16"),
         "the prototxt is UTF-16 text (little-endian byte-order mark); save it as UTF-8"),
        (lambda p: p.write_text(MODELS.joinpath("tiny", "deploy.prototxt").read_text(), encoding="utf-16-be"),
         "the prototxt is UTF-16 text (no byte-order mark); save it as UTF-8"),
        (lambda p: p.write_text("name: 'x'", encoding="utf-32"),
         "the prototxt is UTF-32 text (little-endian byte-order mark); save it as UTF-8"),
        (lambda p: p.write_bytes(caffe_pb2.NetParameter(name="n", layer=[caffe_pb2.LayerParameter(
            name="ip", blobs=[caffe_pb2.BlobProto(data=[0.0, 1.0])])]).SerializeToString()),
         "the prototxt is binary data (it holds NUL bytes), not text (is it a caffemodel?)"),
        (lambda p: open(p, "wb").truncate(17 * 2**20),  # noqa: SIM115 - closed when collected
         "prototxt is 17.0 MiB, larger than the most a prototxt can be (16.0 MiB)"),
        (lambda p: os.mkfifo(p), "cannot read prototxt: not a regular file (a named pipe (FIFO))"),
        (lambda p: p.symlink_to("/dev/zero"), "cannot read prototxt: not a regular file (a character device)"),
        (lambda p: p.write_bytes(b""), "cannot read prototxt: empty file"),
    ],
    ids=["utf16-bom", "utf16-no-bom", "utf32", "caffemodel", "17-MiB", "fifo", "dev-zero", "empty"],
)
def test_a_prototxt_that_is_not_usable_text_is_one_line(tmp_path, make, problem):
    path = tmp_path / "net.prototxt"
    make(path)
    with pytest.raises(ModelError) as error:
        read_prototxt(path)
    assert str(error.value) == f"{path}: {problem}"
