"""Config parsing (§2): the original's line-pair rules, the strict fixes, paths and extension keys."""

import json
import os

import pytest
from conftest import REFERENCE

from lrp_cli.config import EXTENSION_KEYS, FILE_KEYS, ORIGINAL_KEYS, Config, load_config, parse_config
from lrp_cli.errors import ConfigError, LrpError

CASES = sorted(p.parent for p in REFERENCE.glob("cases/*/config.txt"))

BASE = {
    "param_file": "models/deploy.prototxt",
    "model_file": "models/w.caffemodel",
    "mean_file": "models/mean.binaryproto",
    "use_mean_file_asbinaryprotoblob": "1",
    "lastlayerindex": "-2",
    "firstlayerindex": "0",
    "synsetfile": "models/synsets.txt",
    "baseimgsize": "256",
    "standalone_outpath": "./output",
    "standalone_rootpath": "someimages",
    "relpropformulatype": "100",
    "epsstab": "1",
    "alphabeta_beta": "1",
    "numclasses": "1000",
    "auxiliaryvariable_maxlayerindexforflatdistinconv": "0",
}


def _text(pairs, sep="\n", blank=True):
    return sep.join(f"{k}{sep}{v}{sep}" if blank else f"{k}{sep}{v}" for k, v in pairs.items()) + sep


@pytest.fixture
def folder(tmp_path):
    """A config folder with the four input files present under models/."""
    (tmp_path / "models").mkdir()
    for key in FILE_KEYS:
        (tmp_path / BASE[key]).write_text("x")
    return tmp_path


def _load(folder, text, name="config.txt", **kw):
    path = folder / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    kw.setdefault("cwd", folder)
    return load_config(path, **kw)


# ---- the reference cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_reference_configs_match_case_json(case):
    info = json.loads((case / "case.json").read_text())
    cfg = load_config(case / "config.txt", cwd=REFERENCE, check_files=False)
    assert cfg.relpropformulatype == info["formula"]
    assert cfg.epsstab == info["epsstab"]
    assert cfg.alphabeta_beta == info["beta"]
    assert cfg.auxiliaryvariable_maxlayerindexforflatdistinconv == info["aux"]
    assert cfg.lastlayerindex == info["lastlayerindex"]
    assert cfg.firstlayerindex == info["firstlayerindex"]
    tiny = info["model"] == "tiny"
    assert (cfg.numclasses, cfg.baseimgsize) == ((10, 36) if tiny else (1000, 256))
    assert cfg.use_mean_file_asbinaryprotoblob == 1
    assert (cfg.standalone_outpath, cfg.standalone_rootpath) == ("./output", "someimages")
    assert cfg.param_file == REFERENCE / "models" / info["model"] / cfg.raw["param_file"].split("/")[-1]
    assert cfg.synsetfile == REFERENCE / "models" / ("synsets_10.txt" if tiny else "synsets_1000.txt")
    assert (cfg.lrn_relevance, cfg.heatmap_colormap, cfg.mean_alignment, cfg.default_target) == (
        "original", "original", "original", None,
    )  # fmt: skip


def test_reference_config_resolves_files_next_to_config(tmp_path, monkeypatch):
    """A shipped config works from any working directory: files are found relative to its folder."""
    case = REFERENCE / "cases" / "tiny_f100"
    staged = tmp_path / "staged"
    (staged / "models" / "tiny").mkdir(parents=True)
    text = (case / "config.txt").read_text()
    (staged / "config.txt").write_text(text)
    for rel in ("models/tiny/deploy.prototxt", "models/tiny/tiny_seed3.caffemodel",
                "models/imagenet_mean_const.binaryproto", "models/synsets_10.txt"):  # fmt: skip
        (staged / rel).write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(staged / "config.txt")
    assert cfg.model_file == staged / "models/tiny/tiny_seed3.caffemodel"
    assert cfg.raw["model_file"] == "models/tiny/tiny_seed3.caffemodel"
    assert cfg.standalone_outpath == "./output"  # stays relative to the working directory


# ---- the original's format rules ----------------------------------------------------------------------


def test_plain(folder):
    cfg = _load(folder, _text(BASE))
    assert isinstance(cfg, Config)
    assert cfg.param_file == folder / "models/deploy.prototxt" and cfg.param_file.is_absolute()
    assert cfg.epsstab == 1.0 and isinstance(cfg.epsstab, float)
    assert cfg.lines["param_file"] == 1 and cfg.lines["model_file"] == 4
    assert cfg.where("numclasses") == f"{folder / 'config.txt'} line 40 (numclasses)"


def test_order_free_crlf_no_blank_lines(folder):
    pairs = dict(reversed(list(BASE.items())))
    ref = _load(folder, _text(BASE))
    assert _load(folder, _text(pairs)) == ref
    assert _load(folder, _text(BASE, sep="\r\n")) == ref
    assert _load(folder, _text(BASE, blank=False)) == ref


def test_prefix_match_first_wins_unknown_ignored(folder):
    text = (
        "# a comment line\n"
        "param_file_old\nmodels/deploy.prototxt\n"  # prefix match: counts as param_file, and wins
        "  epsstab = 5\t\n0.25\n"  # leading blanks trimmed; "= 5" ignored, value on the next line
        "some_unknown_key\n42\n"
        "-1 finds lowest softmax layer\n" + _text(BASE)
    )
    cfg = _load(folder, text)
    assert cfg.epsstab == 0.25
    assert cfg.lines["param_file"] == 2 and cfg.lines["epsstab"] == 4


def test_value_lines_are_scanned_too(folder):
    # a value line that begins with a key name is that key for the original as well
    pairs = dict(BASE, standalone_rootpath="numclasses_dir")
    text = "standalone_rootpath\nnumclasses_dir\n7\n" + _text(pairs)
    cfg = _load(folder, text)
    assert cfg.standalone_rootpath == "numclasses_dir" and cfg.numclasses == 7


def test_whitespace_only_lines_and_bom(folder):
    text = "\ufeff" + _text(BASE).replace("\n\n", "\n \t \n")
    cfg = _load(folder, text)
    assert cfg.param_file.name == "deploy.prototxt" and cfg.numclasses == 1000


def test_string_is_first_token_and_numbers_parse(folder):
    pairs = dict(BASE, standalone_rootpath="some images", epsstab="1e-10", alphabeta_beta="+0.5", lastlayerindex="-1")
    cfg = _load(folder, _text(pairs))
    assert cfg.standalone_rootpath == "some"
    assert cfg.epsstab == pytest.approx(1e-10, rel=1e-7) and cfg.alphabeta_beta == 0.5 and cfg.lastlayerindex == -1


def test_float_values_are_float32(folder):
    cfg = _load(folder, _text(dict(BASE, epsstab="0.1")))
    assert cfg.epsstab == 0.10000000149011612


def test_check_files_false(folder):
    pairs = dict(BASE, model_file="missing.caffemodel")
    cfg = _load(folder, _text(pairs), check_files=False)
    assert cfg.model_file == folder / "missing.caffemodel"


# ---- path resolution --------------------------------------------------------------------------------------


def test_working_directory_wins_over_config_folder(folder, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "models").mkdir()
    (cwd / "models/synsets.txt").write_text("from cwd")
    cfg = _load(folder, _text(BASE), cwd=cwd)
    assert cfg.synsetfile == cwd / "models/synsets.txt"
    assert cfg.param_file == folder / "models/deploy.prototxt"


def test_absolute_paths(folder, tmp_path_factory):
    other = tmp_path_factory.mktemp("abs") / "m.prototxt"
    other.write_text("x")
    cfg = _load(folder, _text(dict(BASE, param_file=str(other))))
    assert cfg.param_file == other


def test_relative_config_path_and_cwd(folder, monkeypatch):
    monkeypatch.chdir(folder)
    (folder / "config.txt").write_text(_text(BASE))
    cfg = load_config("config.txt")
    assert cfg.source == "config.txt" and cfg.mean_file == folder / "models/mean.binaryproto"


# ---- errors ------------------------------------------------------------------------------------------------


def _without(key):
    return _text({k: v for k, v in BASE.items() if k != key})


BAD = [
    # (id, text, expected pieces of the message)
    ("missing-key", _without("numclasses"), ["numclasses", "missing key"]),
    ("missing-ext-free-key", _without("auxiliaryvariable_maxlayerindexforflatdistinconv"),
     ["auxiliaryvariable_maxlayerindexforflatdistinconv", "missing key"]),
    ("key-on-last-line", _without("numclasses") + "numclasses", ["line 43", "numclasses", "last line"]),
    ("empty-value", "numclasses\n\n" + _without("numclasses"), ["line 2", "numclasses", "empty value"]),
    ("blank-value", "numclasses\n \t\r\n" + _without("numclasses"), ["line 2", "numclasses", "empty value"]),
    ("int-fraction", _text(dict(BASE, numclasses="1.5")), ["line 41", "numclasses", "'1.5' is not an integer"]),
    ("int-junk", _text(dict(BASE, baseimgsize="256px")), ["line 23", "baseimgsize", "'256px' is not an integer"]),
    ("int-words", _text(dict(BASE, relpropformulatype="abc")), ["relpropformulatype", "not an integer"]),
    ("int-overflow", _text(dict(BASE, lastlayerindex="99999999999")), ["lastlayerindex", "32-bit"]),
    ("float-junk", _text(dict(BASE, epsstab="1e-3x")), ["line 35", "epsstab", "not a number"]),
    ("float-nan", _text(dict(BASE, epsstab="nan")), ["epsstab", "not a number"]),
    ("float-underscore", _text(dict(BASE, epsstab="1_0")), ["epsstab", "not a number"]),
    ("float-overflow", _text(dict(BASE, alphabeta_beta="1e40")), ["alphabeta_beta", "float32 range"]),
    ("mode", _text(dict(BASE, use_mean_file_asbinaryprotoblob="3")), ["line 11", "use_mean_file_asbinaryprotoblob"]),
    ("beta-negative", _text(dict(BASE, alphabeta_beta="-0.5")), ["line 38", "alphabeta_beta", "negative"]),
    ("beta-1e38", _text(dict(BASE, alphabeta_beta="1e38")),
     ["line 38: alphabeta_beta: value 1e38 is too large (β must be below 2^24 = 16777216: above it α = 1 + β "
      "rounds to β in float32)"]),
    ("beta-2^24", _text(dict(BASE, alphabeta_beta="16777216")), ["line 38", "alphabeta_beta", "too large"]),
    ("utf16", _text(BASE).encode("utf-16"),
     [": the config file is UTF-16 text (little-endian byte-order mark); save it as UTF-8 or ASCII"]),
    ("utf16-be-no-bom", _text(BASE).encode("utf-16-be"),
     [": the config file is UTF-16 text (no byte-order mark); save it as UTF-8 or ASCII"]),
    ("utf32", _text(BASE).encode("utf-32"), [": the config file is UTF-32 text"]),
    ("binary", bytes(range(256)) * 4, [": the config file is binary data (it holds NUL bytes), not text"]),
    ("empty", b"", [": cannot read config file: empty file"]),
    ("2-MiB", _text(BASE) + "#" * 2**21,
     [": config file is 2.0 MiB, larger than the most a config file can be (1.0 MiB)"]),
    ("baseimgsize-zero", _text(dict(BASE, baseimgsize="0")), ["baseimgsize", "positive"]),
    ("numclasses-negative", _text(dict(BASE, numclasses="-3")), ["numclasses", "positive"]),
    ("missing-file", _text(dict(BASE, model_file="models/nope.caffemodel")),
     ["line 5", "model_file", "nope.caffemodel not found"]),
    ("file-is-dir", _text(dict(BASE, mean_file="models")), ["line 8", "mean_file", "not a regular file"]),
    ("path-with-space", _text(dict(BASE, synsetfile="models/syn sets.txt")), ["synsetfile", "cannot contain spaces"]),
    ("bom-not-needed", "\ufeff" + _without("param_file"), ["param_file", "missing key"]),
    ("ext-bad-value", _text(dict(BASE, lrn_relevance="none")), ["lrn_relevance", "'none' is not one of"]),
    ("ext-bad-colormap", _text(dict(BASE, heatmap_colormap="viridis")), ["heatmap_colormap", "viridis"]),
    ("ext-bad-alignment", _text(dict(BASE, mean_alignment="middle")), ["mean_alignment"]),
    ("ext-bad-target", _text(dict(BASE, default_target="top1")), ["default_target", "not an integer"]),
    ("ext-no-value", _text(BASE) + "default_target\n", ["default_target", "last line"]),
]  # fmt: skip


@pytest.mark.parametrize("text, pieces", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_configs(folder, text, pieces):
    with pytest.raises(ConfigError) as info:
        _load(folder, text, name="my config.txt")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(folder / "my config.txt")), msg
    for piece in pieces:
        assert piece in msg, msg
    assert isinstance(info.value, LrpError)


def test_largest_beta_below_2_24_is_accepted(folder):
    assert _load(folder, _text(dict(BASE, alphabeta_beta="16777215"))).alphabeta_beta == 16777215.0


def test_latin1_bytes_in_a_config_still_work_as_path_bytes(folder):
    (folder / "models" / "syn\udce9.txt".encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
     ).write_text("x")
    text = _text(dict(BASE, synsetfile="models/syn\udce9.txt")).encode("utf-8", "surrogateescape")
    assert _load(folder, text).synsetfile.name == "syn\udce9.txt"


@pytest.mark.parametrize(
    "kind, problem",
    [("fifo", "not a regular file (a named pipe (FIFO))"), ("dev-zero", "not a regular file (a character device)"),
     ("dev-urandom", "not a regular file (a character device)"), ("symlink-loop", "Too many levels of symbolic links"),
     ("dangling-symlink", "No such file or directory")],
)
def test_a_config_that_is_not_a_regular_file_is_refused_unread(tmp_path, kind, problem):
    path = tmp_path / "c.txt"
    target = {"fifo": None, "dev-zero": "/dev/zero", "dev-urandom": "/dev/urandom", "symlink-loop": "c.txt",
              "dangling-symlink": "gone.txt"}[kind]
    os.mkfifo(path) if target is None else path.symlink_to(target)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read config file: {problem}"


def test_missing_and_directory_config(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.txt: config file does not exist"):
        load_config(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_unreadable_config(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("x")

    real_open = os.open

    def deny(name, *args, **kwargs):
        if os.fspath(name) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ConfigError, match="cannot read config file: Permission denied"):
        load_config(path)


# ---- extension keys ---------------------------------------------------------------------------------------


def test_extension_keys(folder):
    text = _text(BASE) + _text(
        {"lrn_relevance": "identity", "heatmap_colormap": "bwr", "mean_alignment": "centered", "default_target": "-1"}
    )
    cfg = _load(folder, text)
    assert (cfg.lrn_relevance, cfg.heatmap_colormap, cfg.mean_alignment, cfg.default_target) == (
        "identity", "bwr", "centered", -1,
    )  # fmt: skip
    assert cfg.lines["default_target"] == 55


def test_heatmap_clip_percentile(folder):
    assert _load(folder, _text(BASE)).heatmap_clip_percentile == 100.0
    cfg = _load(folder, _text(BASE) + _text({"heatmap_clip_percentile": "99.5"}))
    assert cfg.heatmap_clip_percentile == pytest.approx(99.5)
    for bad in ("0", "100.5", "-1", "high"):
        with pytest.raises(ConfigError, match=f"heatmap_clip_percentile.*{bad}"):
            _load(folder, _text(BASE) + _text({"heatmap_clip_percentile": bad}))


def test_no_key_is_a_prefix_of_another():
    keys = [k for k, _ in ORIGINAL_KEYS] + list(EXTENSION_KEYS)
    assert len(keys) == 20 and len(ORIGINAL_KEYS) == 15
    for a in keys:
        for b in keys:
            assert a == b or not b.startswith(a), (a, b)
    # and no extension value can be mistaken for a key by the original's scan
    for allowed, _ in EXTENSION_KEYS.values():
        for value in allowed if isinstance(allowed, tuple) else ():
            assert not any(value.startswith(k) for k in keys)


def test_parse_config_text_directly(folder):
    cfg = parse_config(_text(BASE), "inline", config_dir=folder, cwd=os.getcwd())
    assert cfg.source == "inline" and cfg.numclasses == 1000
    with pytest.raises(ConfigError, match=r"^inline: numclasses: missing key"):
        parse_config(_without("numclasses"), "inline", config_dir=folder)
