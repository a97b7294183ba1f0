"""scripts/download_model.sh against a local HTTP server on 127.0.0.1 serving small fake files (no internet).

Checked: the files land under models/bvlc_reference_caffenet/ of the chosen root (LRP_CLI_ROOT, or the repository
holding the script, whatever the working directory), configs/caffenet.txt is a working lrp-demo config, the
caffemodel's SHA1 is verified, and every failure (404, a broken transfer, a wrong checksum, a bad tarball) ends
with one clear error line, a non-zero exit status, no temporary files and no partial file under a final name.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REFERENCE, ROOT

from lrp_cli.caffe import read_mean, read_prototxt
from lrp_cli.config import load_config

SCRIPT = ROOT / "scripts" / "download_model.sh"
PROG = "download_model.sh"
MODEL = "bvlc_reference_caffenet.caffemodel"
AUX = "caffe_ilsvrc12.tar.gz"
PROTOTXT = "deploy.prototxt"
FAKE_MODEL = b"not really CaffeNet weights \x00\x01\x02\xff" * 3000
SYNSETS = "".join(f"n{i:08d} class number {i}\n" for i in range(1000))


def _mean_blob() -> bytes:
    from lrp_cli.caffe import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 3, 4, 4])
    blob.data.extend(float(v) for v in range(48))
    return blob.SerializeToString()


MEAN = _mean_blob()


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


GOOD_AUX = _tarball({
    "det_synset_words.txt": b"n00000001 something\n",
    "imagenet_mean.binaryproto": MEAN,
    "synset_words.txt": SYNSETS.encode(),
    "train.txt": b"n01440764/n01440764_10026.JPEG 0\n",
})


class _Handler(SimpleHTTPRequestHandler):
    """Serves the folder; records every path asked for; ``/broken/*`` promises more bytes than it sends."""

    requests: list[str]

    def do_GET(self):  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        if self.path.startswith("/broken/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(FAKE_MODEL)))
            self.end_headers()
            self.wfile.write(FAKE_MODEL[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(folder served, base URL, list of requested paths) of a server on a free port of 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    (served / MODEL).write_bytes(FAKE_MODEL)
    (served / AUX).write_bytes(GOOD_AUX)
    shutil.copy(REFERENCE / "models" / "caffenet" / "deploy.prototxt", served / PROTOTXT)
    requests: list[str] = []
    handler = functools.partial(type("H", (_Handler,), {"requests": requests}), directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _env(**values) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRP_CLI_") and "proxy" not in k.lower()}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(values)
    return env


def _run(env, cwd, script=SCRIPT) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _assert_installed(root: Path, served: Path) -> None:
    dest = root / "models" / "bvlc_reference_caffenet"
    assert _files(root) == {
        "configs/caffenet.txt",
        f"models/bvlc_reference_caffenet/{MODEL}",
        f"models/bvlc_reference_caffenet/{PROTOTXT}",
        "models/bvlc_reference_caffenet/imagenet_mean.binaryproto",
        "models/bvlc_reference_caffenet/synset_words.txt",
    }
    assert (dest / MODEL).read_bytes() == FAKE_MODEL
    assert (dest / PROTOTXT).read_bytes() == (served / PROTOTXT).read_bytes()
    assert (dest / "imagenet_mean.binaryproto").read_bytes() == MEAN
    assert (dest / "synset_words.txt").read_text() == SYNSETS
    # the config works with lrp_cli's own readers, from another working directory
    config = load_config(root / "configs" / "caffenet.txt", cwd=served)
    assert config.param_file == dest / PROTOTXT
    assert config.model_file == dest / MODEL
    assert config.mean_file == dest / "imagenet_mean.binaryproto"
    assert config.synsetfile == dest / "synset_words.txt"
    assert (config.relpropformulatype, config.epsstab, config.alphabeta_beta) == (100, 1.0, 1.0)
    assert (config.lastlayerindex, config.firstlayerindex, config.numclasses) == (-2, 0, 1000)
    assert (config.use_mean_file_asbinaryprotoblob, config.baseimgsize) == (1, 256)
    assert (config.standalone_outpath, config.standalone_rootpath) == ("./lrp_output", "someimages")
    assert config.auxiliaryvariable_maxlayerindexforflatdistinconv == 0
    assert [layer.name for layer in read_prototxt(config.param_file).layer][-2:] == ["fc8", "prob"]
    assert read_mean(config.mean_file, 1).height == 4


def test_downloads_into_lrp_cli_root_and_writes_the_config(server, tmp_path):
    served, url, requests = server
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    env = _env(LRP_CLI_ROOT=str(root), LRP_CLI_DOWNLOAD_BASE=url + "/", LRP_CLI_MODEL_SHA1=_sha1(FAKE_MODEL))
    done = _run(env, elsewhere)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr and done.stdout == ""
    assert sorted(requests) == sorted(f"/{name}" for name in (MODEL, AUX, PROTOTXT))
    _assert_installed(root, served)
    assert not any(elsewhere.iterdir())
    assert oct((root / "models" / "bvlc_reference_caffenet" / MODEL).stat().st_mode & 0o777) == "0o644"

    # a second run keeps the verified caffemodel and fetches only the small files again
    requests.clear()
    again = _run(env, elsewhere)
    assert again.returncode == 0, again.stderr
    assert f"/{MODEL}" not in requests and len(requests) == 2
    assert "already there (SHA1 matches)" in again.stderr
    _assert_installed(root, served)


def test_default_root_is_the_repository_holding_the_script(server, tmp_path):
    """Without LRP_CLI_ROOT the files go next to the script's scripts/ folder, not into the working directory;
    each URL overridden on its own."""
    served, url, _ = server
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "scripts").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(SCRIPT, repo / "scripts")
    env = _env(LRP_CLI_MODEL_URL=f"{url}/{MODEL}", LRP_CLI_AUX_URL=f"{url}/{AUX}",
               LRP_CLI_PROTOTXT_URL=f"{url}/{PROTOTXT}", LRP_CLI_MODEL_SHA1=_sha1(FAKE_MODEL))
    done = _run(env, elsewhere, repo / "scripts" / "download_model.sh")
    assert done.returncode == 0, done.stderr
    (repo / "scripts" / "download_model.sh").unlink()
    _assert_installed(repo, served)
    assert not any(elsewhere.iterdir())


def _wget_only_path(tmp_path: Path) -> str:
    """A PATH with every program of the usual bin folders except curl, so that the script falls back to wget."""
    bin_dir = tmp_path / "bin-without-curl"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name != "curl" and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(folder, name))
    return str(bin_dir)


@pytest.mark.parametrize("tool", ["curl", "wget"])
@pytest.mark.parametrize("missing", [MODEL, AUX, PROTOTXT])
def test_a_404_stops_with_one_line_and_leaves_no_partial_file(server, tmp_path, missing, tool):
    served, url, _ = server
    (served / missing).unlink()
    root = tmp_path / "repo"
    root.mkdir()
    env = _env(LRP_CLI_ROOT=str(root), LRP_CLI_DOWNLOAD_BASE=url, LRP_CLI_MODEL_SHA1=_sha1(FAKE_MODEL))
    if tool == "wget":
        env["PATH"] = _wget_only_path(tmp_path)
    done = _run(env, tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not line.startswith(f"{PROG}: downloading ")]
    assert len(errors) == 1, done.stderr
    assert re.fullmatch(rf"{PROG}: error: download of {re.escape(url)}/{re.escape(missing)} failed: .*404.*",
                        errors[0]), errors[0]
    # the script stops at the first failure: what came before is complete, nothing else exists
    order = [MODEL, PROTOTXT, AUX]
    before = order[: order.index(missing)]
    dest = root / "models" / "bvlc_reference_caffenet"
    assert _files(root) == {f"models/bvlc_reference_caffenet/{name}" for name in before}
    for name in before:
        assert (dest / name).read_bytes() == (served / name).read_bytes()


def test_a_broken_transfer_leaves_no_partial_caffemodel(server, tmp_path):
    _, url, _ = server
    root = tmp_path / "repo"
    root.mkdir()
    env = _env(LRP_CLI_ROOT=str(root), LRP_CLI_DOWNLOAD_BASE=url, LRP_CLI_MODEL_URL=f"{url}/broken/{MODEL}",
               LRP_CLI_MODEL_SHA1=_sha1(FAKE_MODEL))
    done = _run(env, tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(f"{PROG}: error: download of {url}/broken/{MODEL} failed: ")
    assert _files(root) == set()


def test_a_wrong_checksum_discards_the_download(server, tmp_path):
    _, url, _ = server
    root = tmp_path / "repo"
    root.mkdir()
    done = _run(_env(LRP_CLI_ROOT=str(root), LRP_CLI_DOWNLOAD_BASE=url), tmp_path)  # the real CaffeNet's SHA1
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"{PROG}: error: {url}/{MODEL}: SHA1 {_sha1(FAKE_MODEL)} does not match the published "
        "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46 (file discarded)"
    )
    assert _files(root) == set()


def test_a_tarball_without_the_synset_words_is_an_error(server, tmp_path):
    served, url, _ = server
    (served / AUX).write_bytes(_tarball({"imagenet_mean.binaryproto": MEAN}))
    root = tmp_path / "repo"
    root.mkdir()
    env = _env(LRP_CLI_ROOT=str(root), LRP_CLI_DOWNLOAD_BASE=url, LRP_CLI_MODEL_SHA1=_sha1(FAKE_MODEL))
    done = _run(env, tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == f"{PROG}: error: {url}/{AUX}: the archive holds no synset_words.txt"
    assert _files(root) == {f"models/bvlc_reference_caffenet/{name}" for name in (MODEL, PROTOTXT)}
    assert not [p for p in root.rglob(".*")]
