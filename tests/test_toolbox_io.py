"""lrp_cli.toolbox model and data files: exact round trips, the text format's errors, pickles, accuracy."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from lrp_cli.errors import LrpError
from lrp_cli.toolbox import data_io, model_io
from lrp_cli.toolbox import modules as M
from lrp_cli.toolbox.errors import ModelFileError, PickleRefusedError, ToolboxFileNotFoundError

DATA = Path(__file__).parent / "data" / "toolbox"
LENET = SHARED / "data/toolbox-models/LeNet-5.txt"
XOR = SHARED / "data/toolbox-models/xor_net_small.txt"
MNIST = SHARED / "data/mnist"


def same_model(a, b):
    assert [type(m) for m in a.modules] == [type(m) for m in b.modules]
    for x, y in zip(a.modules, b.modules, strict=True):
        for attr in ("W", "B"):
            if hasattr(x, attr):
                np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))
                assert getattr(x, attr).dtype == np.float64
        for attr in ("stride", "pool"):
            if hasattr(x, attr):
                assert tuple(getattr(x, attr)) == tuple(getattr(y, attr))


@pytest.mark.parametrize("model", [LENET, XOR, DATA / "formats_model.txt", DATA / "syn_a.txt"])
@pytest.mark.parametrize("ext", ["txt", "npz", "nn", "pickle"])
def test_model_round_trips_exactly(tmp_path, model, ext):
    first = model_io.read(model)
    model_io.write(first, tmp_path / f"m.{ext}")
    second = model_io.read(tmp_path / f"m.{ext}", allow_pickle=True)
    same_model(first, second)
    model_io.write(second, tmp_path / f"again.{ext}")
    if ext in ("txt", "npz"):
        assert model_io.read(tmp_path / f"again.{ext}") is not None
    if ext == "txt":
        assert (tmp_path / "m.txt").read_bytes() == (tmp_path / "again.txt").read_bytes()


def test_writing_keeps_the_forward_state_and_never_pickles_it(tmp_path):
    nn = model_io.read(XOR)
    nn.forward(np.ones((3, 2)))
    model_io.write(nn, tmp_path / "m.nn")
    assert nn.modules[0].X is not None  # not cleaned, unlike the original
    assert b"X" not in pickle.dumps(nn.modules[0].__getstate__())


def test_reading_does_not_consume_random_numbers():
    np.random.seed(3)
    expected = np.random.rand()
    np.random.seed(3)
    model_io.read(LENET)
    assert np.random.rand() == expected


def test_writer_number_format(tmp_path):
    values = [0.1, 1e-05, -0.0, 1.0, 1e16, 12345678.9, 0.30000000000000004, 5e-324, 1e22, 123456789012345.6]
    nn = M.Sequential([M.Linear.from_weights(np.array(values[:9]).reshape(3, 3), values[7:])])
    model_io.write(nn, tmp_path / "m.txt")
    lines = (tmp_path / "m.txt").read_text().split("\n")
    assert lines == ["Linear 3 3", "0.1 1e-05 -0.0 1.0 1e+16 12345678.9 0.30000000000000004 5e-324 1e+22",
                     "5e-324 1e+22 123456789012345.6", ""]


def test_pickles_are_refused_without_allow_pickle(tmp_path):
    with pytest.raises(PickleRefusedError, match="arbitrary code") as err:
        model_io.read(DATA / "formats_model.nn")
    assert isinstance(err.value, LrpError) and "\n" not in str(err.value)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "evil.nn").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(PickleRefusedError, match="builtins.print"):
        model_io.read(tmp_path / "evil.nn", allow_pickle=True)


@pytest.mark.parametrize("text,message", [
    ("Linear 2 2\n1 2 3\n0 0\n", "line 2: Linear 2 2: expected 4 weights, found 3"),
    ("Linear 2 2\n1 2 3 4\n0\n", "line 3: the 2 biases of Linear 2 2: expected 2 values, found 1"),
    ("Linear 2 2\n1 2 x 4\n0 0\n", "line 2: the 4 weights of Linear 2 2: 'x' is not a number"),
    ("Rect\nReLU\n", "line 2: unknown layer type 'ReLU'"),
    ("RectXYZ\n", "line 1: unknown layer type 'RectXYZ'"),
    ("Rect\n\nTanh\n", "line 3: text after the blank line"),
    ("Linear 2\n", "line 1: Linear needs 2 numbers on its line, found 1"),
    ("Convolution 1 1 1 2 1 1\n1 2\n", "line 3: expected the 2 biases of Convolution 1 1 1 2, found the end"),
    ("SumPool 2 2 0 2\n", "line 1: SumPool: the sizes must be positive"),
    ("\n", "no layers"),
])
def test_text_format_errors_are_one_line_with_the_line_number(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ModelFileError) as err:
        model_io.read(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_text_format_tolerances(tmp_path):
    path = tmp_path / "m.txt"
    path.write_bytes(b"Linear 2 3\r\n1 2 3 4 5 6\r\n0.5 0 -1\r\nTanh")  # CRLF, no final newline
    nn = model_io.read(path)
    np.testing.assert_array_equal(nn.modules[0].W, [[1, 2, 3], [4, 5, 6]])
    path.write_text("Linear 2 3\n1 2 3\n4 5 6\n0.5 0 -1\nRect\n\n\n")  # legacy layout, trailing blank lines
    nn = model_io.read(path)
    np.testing.assert_array_equal(nn.modules[0].W, [[1, 2, 3], [4, 5, 6]])
    assert isinstance(nn.modules[1], M.Rect)


def test_model_file_problems(tmp_path):
    with pytest.raises(ToolboxFileNotFoundError, match="no such model file"):
        model_io.read(tmp_path / "missing.txt")
    (tmp_path / "m.mat").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="Matlab"):
        model_io.read(tmp_path / "m.mat")
    (tmp_path / "m.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a toolbox .npz model"):
        model_io.read(tmp_path / "m.npz")


@pytest.mark.parametrize("ext", ["npy", "npz", "txt", "mat"])
def test_data_round_trips_exactly(tmp_path, ext):
    data = np.load(DATA / "formats_data_expected.npy")
    data_io.write(data, tmp_path / f"d.{ext}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"d.{ext}"]  # no x.npz.npy
    back = data_io.read(tmp_path / f"d.{ext}")
    np.testing.assert_array_equal(back, data)
    assert back.dtype == np.float64


def test_data_file_problems(tmp_path):
    with pytest.raises(ToolboxFileNotFoundError):
        data_io.read(tmp_path / "nope.npy")
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(LrpError, match="not readable as npy data"):
        data_io.read(tmp_path / "d.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(LrpError, match="o.npy"):
        data_io.read(tmp_path / "o.npy")


def test_lenet5_accuracy_on_the_1000_mnist_digits():
    nn = model_io.read(LENET)
    X = np.load(MNIST / "test_images_first1000.npy") / 127.5 - 1.0
    X = np.pad(X.reshape(-1, 28, 28, 1), ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    labels = np.load(MNIST / "test_labels_first1000.npy").ravel()
    accuracy = np.mean(np.argmax(nn.forward(X), axis=1) == labels)
    assert accuracy >= 0.98
    assert accuracy == 0.988  # the original's accuracy on these digits


def test_xor_net_truth_table():
    nn = model_io.read(XOR)
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(np.argmax(nn.forward(X), axis=1), [0, 1, 1, 0])
