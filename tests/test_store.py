"""Tests for openaff.store: fetching, verifying, caching and loading checkpoints."""
import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from openaff import store
from openaff.store import (
    CheckpointError,
    CheckpointMismatchError,
    ChecksumError,
    DownloadError,
    fetch_release,
    git_blob_sha1,
    load_checkpoint,
)

REL = "params/model file.params"  # space exercises URL quoting


# --------------------------------------------------------------------------
# Loopback HTTP server
# --------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.server.override is not None:
            body = self.server.override
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:self.server.cut_after])  # all of it unless cut
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve ``tmp_path/srv`` on 127.0.0.1 and point OPENAFF_BASE_URL at it."""
    srv_dir = tmp_path / "srv"
    (srv_dir / "params").mkdir(parents=True)
    handler = functools.partial(_Handler, directory=str(srv_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests, httpd.delay, httpd.override, httpd.cut_after = [], 0, None, None
    httpd.dir = srv_dir
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAFF_BASE_URL",
                       "http://127.0.0.1:%d/" % httpd.server_address[1])
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def published(server):
    """Put a released file on the server; return (content, blob sha1)."""
    content = os.urandom(3 * 1024 * 1024 + 17)
    path = server.dir / REL
    path.write_bytes(content)
    return content, git_blob_sha1(str(path))


def _blob_sha1_bytes(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _cache_files(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --------------------------------------------------------------------------
# git_blob_sha1
# --------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"hello\n", bytes(range(256)) * 5000])
def test_blob_sha1_matches_git(tmp_path, content):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    expected = subprocess.run(["git", "hash-object", str(path)], check=True,
                              capture_output=True, text=True).stdout.strip()
    assert git_blob_sha1(str(path)) == expected


# --------------------------------------------------------------------------
# fetch_release
# --------------------------------------------------------------------------

def test_fetch_downloads_and_verifies(tmp_path, server, published):
    content, sha = published
    root = tmp_path / "cache"
    path = fetch_release(REL, sha, root=str(root), progress=False)
    assert path == str(root / "model file.params")
    assert open(path, "rb").read() == content
    assert server.requests == ["/params/model%20file.params"]
    assert not [n for n in _cache_files(root) if n.endswith(".part")]


def test_fetch_uses_cache_without_network(tmp_path, server, published):
    _, sha = published
    root = str(tmp_path / "cache")
    first = fetch_release(REL, sha, root=root, progress=False)
    server.requests.clear()
    assert fetch_release(REL, sha.upper(), root=root, progress=False) == first
    assert server.requests == []


def test_fetch_expands_user_root(tmp_path, server, published, monkeypatch):
    _, sha = published
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = fetch_release(REL, sha, root="~/models", progress=False)
    assert path == str(tmp_path / "home" / "models" / "model file.params")


def test_base_url_argument_overrides_env(tmp_path, server, published, monkeypatch):
    _, sha = published
    url = os.environ["OPENAFF_BASE_URL"]
    monkeypatch.setenv("OPENAFF_BASE_URL", "http://127.0.0.1:9/nowhere/")
    fetch_release(REL, sha, root=str(tmp_path / "c"), base_url=url.rstrip("/"),
                  progress=False)
    assert len(server.requests) == 1


def test_corrupt_cache_is_refetched(tmp_path, server, published):
    content, sha = published
    root = tmp_path / "cache"
    root.mkdir()
    (root / "model file.params").write_bytes(b"truncated")
    path = fetch_release(REL, sha, root=str(root), progress=False)
    assert open(path, "rb").read() == content
    assert len(server.requests) == 1


def test_wrong_bytes_raise_checksum_error(tmp_path, server, published):
    _, sha = published
    server.override = b"not the checkpoint"
    root = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        fetch_release(REL, sha, root=str(root), progress=False)
    msg = str(info.value)
    assert sha in msg and "model%20file.params" in msg
    assert _blob_sha1_bytes(b"not the checkpoint") in msg
    assert len(server.requests) == 2  # one retry
    assert [n for n in _cache_files(root) if not n.endswith(".lock")] == []


def test_a_transfer_cut_off_is_reported_as_such(tmp_path, server, published):
    content, sha = published
    server.override, server.cut_after = content, len(content) // 2
    root = tmp_path / "cache"
    with pytest.raises(DownloadError, match="cut off"):
        fetch_release(REL, sha, root=str(root), progress=False)
    assert [n for n in _cache_files(root) if not n.endswith(".lock")] == []


def test_a_verified_copy_is_used_where_no_lock_can_be_taken(tmp_path, server, published,
                                                            monkeypatch):
    """A read-only cache (as root, a chmod cannot make one, so taking the lock fails)."""
    content, sha = published
    root = tmp_path / "cache"
    root.mkdir()
    (root / os.path.basename(REL)).write_bytes(content)

    def no_lock(path):
        raise PermissionError(13, "Read-only file system", path)
    monkeypatch.setattr(store.filelock, "FileLock", no_lock)
    assert fetch_release(REL, sha, root=str(root)) == str(root / os.path.basename(REL))
    assert server.requests == []


def test_server_down_raises_download_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAFF_BASE_URL", "http://127.0.0.1:9/")  # discard port
    root = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        fetch_release(REL, "0" * 40, root=str(root), progress=False)
    msg = str(info.value)
    assert "http://127.0.0.1:9/params/model%20file.params" in msg
    assert "OPENAFF_BASE_URL" in msg and "pretrained=" in msg
    assert [n for n in _cache_files(root) if not n.endswith(".lock")] == []


def test_http_404_raises_download_error(tmp_path, server):
    with pytest.raises(DownloadError, match="404"):
        fetch_release("params/absent.params", "0" * 40,
                      root=str(tmp_path / "c"), progress=False)


def test_file_url_mirror(tmp_path, published, server, monkeypatch):
    content, sha = published
    monkeypatch.setenv("OPENAFF_BASE_URL", server.dir.as_uri())
    path = fetch_release(REL, sha, root=str(tmp_path / "c"), progress=False)
    assert open(path, "rb").read() == content
    assert server.requests == []


def test_concurrent_threads_download_once(tmp_path, server, published):
    content, sha = published
    server.delay = 0.5
    root = str(tmp_path / "cache")
    results, errors = [], []

    def worker():
        try:
            results.append(fetch_release(REL, sha, root=root, progress=False))
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and open(results[0], "rb").read() == content
    assert len(server.requests) == 1


@pytest.mark.multiprocess
def test_concurrent_processes_download_once(tmp_path, server, published):
    _, sha = published
    server.delay = 1.0
    root = str(tmp_path / "cache")
    code = ("import sys; from openaff.store import fetch_release; "
            "print(fetch_release(sys.argv[1], sys.argv[2], root=sys.argv[3], "
            "progress=False))")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(store.__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", code, REL, sha, root],
                              env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1]
    assert len(server.requests) == 1


# --------------------------------------------------------------------------
# load_checkpoint
# --------------------------------------------------------------------------

def make_net(classes=10, deferred=True):
    """A small conv net; unknown input dims stay 0 until loading/forward."""
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                nn.GlobalAvgPool2D(), nn.Dense(8), nn.Dense(classes))
    if deferred:
        net.initialize(mx.init.Xavier())
    return net


def _trained(tmp_path, classes=10, name="net.params"):
    """An initialised net with non-trivial BatchNorm stats, saved to a file."""
    net = make_net(classes)
    x = mx.nd.random.uniform(shape=(2, 3, 8, 8))
    net(x)
    for p in net.collect_params().values():
        p.set_data(mx.nd.random.normal(shape=p.shape))
    path = str(tmp_path / name)
    net.save_parameters(path)
    return net, path, x


def test_strict_round_trip_into_deferred_net(tmp_path):
    src, path, x = _trained(tmp_path)
    dst = make_net()
    report = load_checkpoint(dst, path)
    assert sorted(report.loaded) == sorted(src._collect_params_with_prefix())
    assert report.missing == report.unexpected == report.skipped == report.cast == []
    np.testing.assert_array_equal(dst(x).asnumpy(), src(x).asnumpy())
    assert "loaded 10 parameters" in str(report)


def test_round_trip_into_uninitialised_net(tmp_path):
    src, path, x = _trained(tmp_path)
    dst = make_net(deferred=False)
    load_checkpoint(dst, path, ctx=mx.cpu())
    np.testing.assert_array_equal(dst(x).asnumpy(), src(x).asnumpy())


def test_load_from_dict_with_legacy_prefixes(tmp_path):
    src, path, x = _trained(tmp_path)
    raw = mx.nd.load(path)
    legacy = {("aux:" if "running" in k else "arg:") + k: v for k, v in raw.items()}
    dst = make_net()
    load_checkpoint(dst, legacy)
    np.testing.assert_array_equal(dst(x).asnumpy(), src(x).asnumpy())


def test_float16_file_into_float32_net(tmp_path):
    _, path, x = _trained(tmp_path)
    # like the released checkpoints: float16 weights, float32 BatchNorm ("1.")
    saved = {k: v if k.startswith("1.") else v.astype("float16")
             for k, v in mx.nd.load(path).items()}
    half = str(tmp_path / "half.params")
    mx.nd.save(half, saved)
    dst = make_net()
    report = load_checkpoint(dst, half)
    params = dst._collect_params_with_prefix()
    assert sorted(report.cast) == sorted(k for k in params if not k.startswith("1."))
    for name, param in params.items():
        assert param.data().dtype == np.float32
        np.testing.assert_array_equal(param.data().asnumpy(),
                                      saved[name].asnumpy().astype(np.float32))
    assert dst(x).dtype == np.float32


def test_mismatch_lists_everything_and_loads_nothing(tmp_path):
    _, path, _ = _trained(tmp_path)
    raw = mx.nd.load(path)
    raw["extra.weight"] = mx.nd.zeros((1,))
    del raw["0.bias"]
    raw["4.weight"] = mx.nd.zeros((5, 4))
    dst = make_net()
    before = _snapshot(dst)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(dst, raw)
    msg = str(info.value)
    assert "missing" in msg and "0.bias" in msg
    assert "unexpected" in msg and "extra.weight" in msg
    assert "shape conflicts" in msg and "4.weight" in msg and "(5, 4)" in msg
    assert isinstance(info.value, CheckpointError)
    after = _snapshot(dst)
    assert before.keys() == after.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(value, after[name])


def _snapshot(net):
    """Values of the parameters that already hold data (others are deferred)."""
    return {k: p.data().asnumpy().copy()
            for k, p in net._collect_params_with_prefix().items()
            if p._data is not None}


def test_mismatch_message_is_capped():
    dst = make_net()
    raw = {"junk%03d" % i: mx.nd.zeros((1,)) for i in range(100)}
    with pytest.raises(CheckpointMismatchError, match=r"\.\.\. and 80 more"):
        load_checkpoint(dst, raw, allow_missing=True)


def test_allow_missing_and_ignore_extra(tmp_path):
    _, path, _ = _trained(tmp_path)
    raw = mx.nd.load(path)
    raw["extra.weight"] = mx.nd.zeros((1,))
    del raw["0.bias"]
    dst = make_net()
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(dst, raw, allow_missing=True)
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(dst, raw, ignore_extra=True)
    report = load_checkpoint(dst, raw, allow_missing=True, ignore_extra=True)
    assert report.missing == ["0.bias"] and report.unexpected == ["extra.weight"]
    assert "0.bias" not in report.loaded


def test_skip_classifier_loads_100_class_file_into_10_class_net(tmp_path):
    src, path, x = _trained(tmp_path, classes=100)
    dst = make_net(classes=10)
    with pytest.raises(CheckpointMismatchError, match="5.weight"):
        load_checkpoint(dst, path)
    report = load_checkpoint(dst, path, skip_classifier=True)
    assert report.skipped == ["5.weight", "5.bias"]
    assert dst(x).shape == (2, 10)
    for name, param in dst._collect_params_with_prefix().items():
        if not name.startswith("5."):
            np.testing.assert_array_equal(
                param.data().asnumpy(),
                src._collect_params_with_prefix()[name].data().asnumpy())


def test_skip_classifier_initialises_uninitialised_head(tmp_path):
    _, path, x = _trained(tmp_path, classes=100)
    dst = make_net(classes=10, deferred=False)
    load_checkpoint(dst, path, skip_classifier=True, classifier=["5."])
    assert dst(x).shape == (2, 10)


def test_explicit_classifier_prefix(tmp_path):
    _, path, x = _trained(tmp_path, classes=100)
    # skipping the wrong layer leaves the real classifier's conflict
    with pytest.raises(CheckpointMismatchError, match="5.weight"):
        load_checkpoint(make_net(classes=10), path, skip_classifier=True,
                        classifier="4.")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.params"):
        load_checkpoint(make_net(), str(tmp_path / "nope.params"))


def test_garbage_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.params"
    path.write_bytes(b"\x00this is not an mxnet file" * 10)
    with pytest.raises(CheckpointError, match="garbage.params"):
        load_checkpoint(make_net(), str(path))


def test_corrupt_file_message_says_why_not_where(tmp_path):
    path = tmp_path / "garbage.params"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(make_net(), str(path))
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("spoil, message", [
    (lambda a: a * float("nan"), "non-finite"),
    (lambda a: a / 0.0, "non-finite"),
    (lambda a: a.astype("int32"), "int32"),
])
def test_weights_that_are_not_finite_floats_are_refused(tmp_path, spoil, message):
    net = make_net()
    net(mx.nd.ones((1, 3, 8, 8)))
    path = str(tmp_path / "w.params")
    net.save_parameters(path)
    weights = mx.nd.load(path)
    first = sorted(weights)[0]
    weights[first] = spoil(weights[first])
    mx.nd.save(path, weights)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(make_net(), path)
    if message == "non-finite":
        load_checkpoint(make_net(), path, allow_non_finite=True)  # when asked


def test_shared_parameters_deduplicated_file(tmp_path):
    def shared_net():
        net = nn.HybridSequential()
        first = nn.Dense(6, in_units=6)
        net.add(first, nn.Dense(6, in_units=6, params=first.params))
        net.initialize()
        return net

    src = shared_net()
    path = str(tmp_path / "shared.params")
    src.save_parameters(path, deduplicate=True)
    assert len(mx.nd.load(path)) == 2  # one copy of the shared weight/bias
    dst = shared_net()
    report = load_checkpoint(dst, path)
    assert report.missing == []
    x = mx.nd.ones((1, 6))
    np.testing.assert_array_equal(dst(x).asnumpy(), src(x).asnumpy())


def test_progress_bar_on_request(tmp_path, server, published, capsys):
    _, sha = published
    fetch_release(REL, sha, root=str(tmp_path / "c"), progress=True)
    assert "model file.params" in capsys.readouterr().err
