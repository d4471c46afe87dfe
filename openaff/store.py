"""Fetch, verify, cache and load pretrained checkpoints.

Released checkpoints are identified by their git blob SHA-1 (the id git
gives a file's content), so a file can be checked against the repository
that publishes it without a separate checksum list.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import filelock
import mxnet as mx
import numpy as np
from tqdm import tqdm

__all__ = [
    "DEFAULT_BASE_URL", "ChecksumError", "DownloadError", "CheckpointError",
    "CheckpointMismatchError", "LoadReport", "check_ctx", "default_root", "git_blob_sha1",
    "fetch_release", "load_checkpoint",
]

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/YimianDai/open-aff/master/"
BASE_URL_ENV = "OPENAFF_BASE_URL"
# the cache without $MXNET_HOME; default_root() is what a call without root uses
DEFAULT_ROOT = os.path.join("~", ".mxnet", "models")


def default_root():
    """The checkpoint cache when no ``root`` is given: ``$MXNET_HOME/models``, MXNet's (and
    GluonCV's) data-directory convention, else ``~/.mxnet/models``. Read at each call, so
    setting ``MXNET_HOME`` after import counts."""
    return os.path.join(mx.base.data_dir(), "models")


_CHUNK = 1 << 20
_TIMEOUT = 60
_ATTEMPTS = 2
_LIST_CAP = 20


class ChecksumError(RuntimeError):
    """A downloaded file's git blob SHA-1 differs from the expected one."""


class DownloadError(OSError):
    """A file could not be downloaded."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the network."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's parameter names or shapes do not match the network."""


# --------------------------------------------------------------------------
# Hashing and downloading
# --------------------------------------------------------------------------

def git_blob_sha1(path):
    """Return the git blob id (hex SHA-1 of ``b"blob <size>\\0" + content``) of a file."""
    sha = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _resolve_url(relpath, base_url):
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + urllib.parse.quote(relpath.lstrip("/"))


def _download_hint(url, reason):
    return (
        "Could not download %s: %s. If this machine is offline, set %s to a "
        "mirror holding the same files (an http(s):// or file:// URL), or "
        "download the file yourself and pass pretrained='<local path>'."
        % (url, reason, BASE_URL_ENV))


def _open_url(url):
    try:
        return urllib.request.urlopen(url, timeout=_TIMEOUT)
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise DownloadError(_download_hint(url, err)) from err


def _read_chunk(resp, url):
    try:
        return resp.read(_CHUNK)
    except http.client.IncompleteRead as err:
        raise DownloadError(_download_hint(url, "the transfer was cut off after %d more bytes"
                                           % len(err.partial))) from None
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(_download_hint(url, err)) from err


def _progress_bar(resp, name, progress):
    if progress is None:
        progress = sys.stderr.isatty()
    length = resp.headers.get("Content-Length") if resp.headers else None
    return tqdm(total=int(length) if length else None, unit="B",
                unit_scale=True, unit_divisor=1024, desc=name,
                disable=not progress, file=sys.stderr)


def _download_to(url, dest, progress):
    resp = _open_url(url)
    length = resp.headers.get("Content-Length") if resp.headers else None
    received = 0
    with resp, open(dest, "wb") as out, \
            _progress_bar(resp, os.path.basename(dest), progress) as bar:
        for chunk in iter(lambda: _read_chunk(resp, url), b""):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if length and received < int(length):
        raise DownloadError(_download_hint(
            url, "the transfer was cut off after %d of %s bytes" % (received, length)))


def _download_verified(url, path, expected, progress):
    """Download ``url`` to ``path`` atomically; retry once on a bad checksum."""
    got = None
    for _ in range(_ATTEMPTS):
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".",
                                   suffix=".part", dir=os.path.dirname(path))
        os.close(fd)
        try:
            _download_to(url, tmp, progress)
            got = git_blob_sha1(tmp)
            if got == expected:
                os.chmod(tmp, 0o644)  # mkstemp creates 0600
                os.replace(tmp, path)
                return path
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise ChecksumError(
        "Checksum mismatch for %s: expected git blob SHA-1 %s, got %s "
        "(after %d attempts)." % (url, expected, got, _ATTEMPTS))


def fetch_release(relpath, blob_sha1, root=None, base_url=None,
                  progress=None):
    """Return the local path of a verified copy of a released file.

    The file is cached as ``<root>/<basename of relpath>``. A cached copy
    whose git blob SHA-1 equals ``blob_sha1`` is returned without touching
    the network; otherwise the file is downloaded from ``base_url + relpath``
    (``base_url`` defaults to ``$OPENAFF_BASE_URL``, then
    :data:`DEFAULT_BASE_URL`), verified and moved into place atomically.
    A file lock next to the cached file serialises concurrent callers.

    Parameters
    ----------
    relpath : str
        Path of the file relative to the base URL.
    blob_sha1 : str
        Expected git blob id of the file (as shown by ``git ls-tree``).
    root : str, optional
        Cache directory; ``~`` is expanded and the directory is created. Default
        :func:`default_root` (``$MXNET_HOME/models``, else ``~/.mxnet/models``).
    base_url : str, optional
        Overrides the environment variable and the default base URL.
    progress : bool, optional
        Show a progress bar; by default only when stderr is a terminal.

    Raises
    ------
    DownloadError
        The file could not be downloaded.
    ChecksumError
        Two downloads in a row did not match ``blob_sha1``.
    """
    expected = blob_sha1.lower()
    root = os.path.expanduser(os.fspath(default_root() if root is None else root))
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, os.path.basename(relpath))
    # a verified copy is used as it is: files are only ever replaced whole, so no lock is
    # needed to read one (and a read-only cache can serve it)
    if os.path.isfile(path) and git_blob_sha1(path) == expected:
        return path
    if not os.access(root, os.W_OK):
        raise DownloadError("The cache %s is read-only and holds no verified copy of %s; "
                            "pass a writable root, or set MXNET_HOME (the cache is then "
                            "$MXNET_HOME/models)." % (root, relpath))
    with filelock.FileLock(path + ".lock"):
        if os.path.isfile(path) and git_blob_sha1(path) == expected:
            return path
        url = _resolve_url(relpath, base_url)
        return _download_verified(url, path, expected, progress)


# --------------------------------------------------------------------------
# Loading checkpoints into Gluon networks
# --------------------------------------------------------------------------

@dataclasses.dataclass
class LoadReport:
    """What :func:`load_checkpoint` did; all fields are lists of structural names."""

    loaded: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    unexpected: list = dataclasses.field(default_factory=list)
    cast: list = dataclasses.field(default_factory=list)

    def __str__(self):
        parts = ["loaded %d parameters" % len(self.loaded)]
        for field in ("skipped", "missing", "unexpected", "cast"):
            names = getattr(self, field)
            if names:
                parts.append("%s %d: %s" % (field, len(names), _brief(names)))
        return "; ".join(parts)


def _brief(items, cap=_LIST_CAP):
    items = [str(i) for i in items]
    text = ", ".join(items[:cap])
    if len(items) > cap:
        text += ", ... and %d more" % (len(items) - cap)
    return text


def _read_params_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "Checkpoint file not found: %r. Pass the path of a .params file "
            "written by save_parameters." % path)
    try:
        loaded = mx.nd.load(path)
    except Exception as err:  # MXNet reports corrupt files as MXNetError/others
        raise CheckpointError(
            "Cannot read checkpoint %r: not an MXNet parameter file (%s)"
            % (path, _reason(err))) from None
    if isinstance(loaded, list) and not loaded:
        return {}  # mx.nd.save writes a parameter-free net's empty dict as an empty list
    if not isinstance(loaded, dict):
        raise CheckpointError(
            "Checkpoint %r holds an unnamed list of arrays, not a dict of "
            "named parameters." % path)
    return loaded


def _reason(err):
    """The line of an MXNet error message that says what went wrong (its first line is often
    'Traceback (most recent call last):' of the C++ stack)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = [line for line in lines if "Check failed" in line or "Error" in line.split(":")[0]]
    return (said or lines or [type(err).__name__])[-1]


def _check_values(label, loaded, names, allow_non_finite):
    """Refuse integer arrays, and NaN or inf unless ``allow_non_finite``."""
    for name in names:
        array = loaded[name]
        if np.dtype(array.dtype).kind != "f":
            raise CheckpointError("Checkpoint %s: %s is %s, not a floating-point array."
                                  % (label, name, np.dtype(array.dtype).name))
        if not allow_non_finite and not np.isfinite(array.asnumpy()).all():
            raise CheckpointError(
                "Checkpoint %s: %s holds non-finite values (NaN or inf), as a diverged run "
                "leaves; pass allow_non_finite=True to load it anyway." % (label, name))


def _as_ndarray(value):
    if isinstance(value, mx.nd.NDArray):
        return value
    value = np.asarray(value)
    return mx.nd.array(value, dtype=value.dtype)


def _normalise_keys(loaded, params):
    """Strip legacy ``arg:``/``aux:`` prefixes; map legacy full names to structural ones."""
    by_full_name = {p.name: k for k, p in params.items()}
    out = {}
    for key, value in loaded.items():
        if key.startswith(("arg:", "aux:")):
            key = key[4:]
        if key not in params and key in by_full_name:
            key = by_full_name[key]
        out[key] = _as_ndarray(value)
    return out


def _shape_fits(net_shape, file_shape):
    if not net_shape:  # unknown shape: anything fits
        return True
    return len(net_shape) == len(file_shape) and all(
        n in (0, -1, f) for n, f in zip(net_shape, file_shape))


def _classifier_names(params, loaded, classifier):
    """Names (in the net or the file) under the classifier prefix(es)."""
    if not params:
        return set()
    prefixes = _classifier_prefixes(params, classifier)
    return {k for k in set(params) | set(loaded) if k.startswith(prefixes)}


def _classifier_prefixes(params, classifier):
    if classifier is None:
        last = next(reversed(list(params)))
        return (last.rsplit(".", 1)[0] + ".",) if "." in last else (last,)
    if isinstance(classifier, str):
        return (classifier,)
    return tuple(classifier)


def _missing_names(params, loaded):
    """Net names absent from the file; a shared parameter counts as present
    if it is stored under any of its names (``save_parameters(deduplicate=True)``)."""
    present = {id(params[k]) for k in loaded if k in params}
    return [k for k, p in params.items() if id(p) not in present]


def _plan(params, loaded, skip):
    """Return (to_load, missing, unexpected, conflicts) ignoring names in ``skip``."""
    to_load, conflicts = [], []
    for name, param in params.items():
        if name in skip or name not in loaded:
            continue
        if _shape_fits(param.shape, loaded[name].shape):
            to_load.append(name)
        else:
            conflicts.append((name, loaded[name].shape, param.shape))
    kept = {k: p for k, p in params.items() if k not in skip}
    missing = _missing_names(kept, loaded)
    unexpected = sorted(k for k in loaded if k not in params and k not in skip)
    return to_load, missing, unexpected, conflicts


def _mismatch_message(source, missing, unexpected, conflicts):
    lines = ["Checkpoint %s does not match the network:" % source]
    if missing:
        lines.append("  missing in checkpoint (%d): %s"
                     % (len(missing), _brief(missing)))
    if unexpected:
        lines.append("  unexpected in checkpoint (%d): %s"
                     % (len(unexpected), _brief(unexpected)))
    if conflicts:
        shown = ["%s (checkpoint %s vs network %s)" % c for c in conflicts]
        lines.append("  shape conflicts (%d): %s"
                     % (len(conflicts), _brief(shown)))
    lines.append("Use allow_missing=True / ignore_extra=True / "
                 "skip_classifier=True to relax the check.")
    return "\n".join(lines)


def _is_cast(param, array):
    return param.dtype is not None and np.dtype(param.dtype) != array.dtype


def _init_skipped(params, names, ctx):
    for name in names:
        param = params[name]
        if param._data is None and not param._deferred_init:
            param.initialize(ctx=ctx)


def check_ctx(ctx, name="ctx"):
    """``TypeError`` unless ``ctx`` is ``None``, an ``mx.Context`` or a non-empty list or tuple
    of them (a string such as ``'cpu'`` is not one: ``mx.cpu()`` is)."""
    if ctx is None:
        return
    items = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    if not items or not all(isinstance(item, mx.Context) for item in items):
        raise TypeError("%s must be an mx.Context (e.g. mx.cpu(), mx.gpu(0)) or a list of "
                        "them, got %r" % (name, ctx))


def load_checkpoint(net: mx.gluon.Block, source: str | os.PathLike | Mapping[str, Any],
                    ctx: mx.Context | Sequence[mx.Context] | None = None,
                    skip_classifier: bool = False,
                    classifier: str | Sequence[str] | None = None, allow_missing: bool = False,
                    ignore_extra: bool = False, allow_non_finite: bool = False) -> LoadReport:
    """Load a checkpoint into a Gluon block, strictly by default.

    Nothing is loaded unless the whole check passes. The network may be
    deferred-initialised (unknown dimensions are 0): such dimensions match
    anything and are fixed by loading, so no forward pass is needed. Arrays
    are cast to each parameter's current dtype (a float16 file loads into a
    float32 network).

    Parameters
    ----------
    net : mxnet.gluon.Block
        Network whose parameters are loaded, matched by structural name
        (``features.0.weight``) as written by ``save_parameters``.
    source : str or dict
        Path to a ``.params`` file, or a dict of name -> NDArray. Legacy
        ``arg:``/``aux:`` key prefixes are stripped.
    ctx : Context or list of Context, optional
        Where to place parameters that are not yet on a device; ``None`` keeps
        a parameter's existing context, else uses ``mx.cpu()``.
    skip_classifier : bool
        Do not load the classifier; it keeps (or gets) its own initialisation,
        so a checkpoint with a different number of classes can be loaded.
    classifier : str or list of str, optional
        Structural-name prefix(es) of the classifier, e.g. ``'output.'``.
        Defaults to the prefix of the network's last parameter.
    allow_missing : bool
        Accept network parameters absent from the checkpoint.
    ignore_extra : bool
        Accept checkpoint entries that the network does not have.
    allow_non_finite : bool
        Load arrays holding NaN or inf (refused by default: a diverged run's weights).

    Returns
    -------
    LoadReport

    Raises
    ------
    TypeError
        ``net`` is not a Gluon block, ``source`` neither a path nor a dict, or ``ctx`` not a
        context or list of them.
    FileNotFoundError
        ``source`` is a path that does not exist.
    CheckpointError
        The file cannot be read as MXNet parameters.
    CheckpointMismatchError
        Names or shapes do not match (after the relaxations above).
    CheckpointError
        Also for integer arrays, and for NaN or inf unless ``allow_non_finite``.
    """
    if not isinstance(net, mx.gluon.Block):
        raise TypeError("load_checkpoint loads into a Gluon Block, got %s" % type(net).__name__)
    if not isinstance(source, (str, os.PathLike, Mapping)):
        raise TypeError("source must be the path of a .params file or a dict of name -> array, "
                        "got %s" % type(source).__name__)
    check_ctx(ctx)
    params = net._collect_params_with_prefix()
    raw = _read_params_file(os.fspath(source)) if isinstance(source, (str, os.PathLike)) \
        else source
    loaded = _normalise_keys(raw, params)
    skip = _classifier_names(params, loaded, classifier) if skip_classifier else set()

    to_load, missing, unexpected, conflicts = _plan(params, loaded, skip)
    label = repr(os.fspath(source)) if not isinstance(source, Mapping) else "(dict)"
    if conflicts or (missing and not allow_missing) or (unexpected and not ignore_extra):
        raise CheckpointMismatchError(
            _mismatch_message(label, missing, unexpected, conflicts))
    _check_values(label, loaded, to_load, allow_non_finite)

    report = LoadReport(missing=missing, unexpected=unexpected,
                        skipped=[k for k in params if k in skip])
    for name in to_load:
        param, array = params[name], loaded[name]
        if _is_cast(param, array):
            report.cast.append(name)
        param._load_init(array, ctx, cast_dtype=True, dtype_source="current")
        report.loaded.append(name)
    _init_skipped(params, report.skipped, ctx)
    return report
