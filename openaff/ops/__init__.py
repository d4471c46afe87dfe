"""Native (C++) operators for the fusion blocks, built on first use and loaded into MXNet.

MXNet 1.9.1 on CPU has no oneDNN element-wise multiply: the Python form of AFF's soft
selection (Dai et al., WACV 2021, Sec. 3.3) runs as several broadcast operators, each of which
reorders its oneDNN-layout inputs to the plain layout and makes its own pass over the maps.
``openaff_soft_select`` does the whole selection in one pass, forward and backward.
``openaff_mscam_select`` is the whole MS-CAM selection for inference graphs: both context
branches with their BatchNorms folded into the 1x1 convolutions, the global pooling and the
selection, in two passes over the maps (no backward). They are compiled with the system
C++ compiler against the headers shipped in the mxnet wheel (MXNet's extension library API),
cached per source, MXNet version and CPU, and loaded with :func:`mxnet.library.load`.

Where it cannot be built (no compiler), the fusion blocks use the Python algebra and say so
once. ``OPENAFF_NATIVE_OPS=0`` turns the native operators off; ``OPENAFF_CACHE`` moves the
cache (default ``~/.cache/openaff``). ``openaff-ops`` builds ahead of time.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import warnings

import mxnet as mx

__all__ = ['available', 'library_path', 'build', 'intact', 'SOURCES']

HERE = pathlib.Path(__file__).parent
SOURCES = (HERE / 'soft_select.cc', HERE / 'mscam_select.cc')
HEADERS = (HERE / 'attributes.h', HERE / 'sigmoid.h')
EXPORTS = HERE / 'exports.map'  # linker version script: only MXNet's entry points are public
_STATE = {}


def _mxnet_dir():
    return pathlib.Path(mx.__file__).parent


def _cpu_signature():
    """The CPU's feature flags: the library is built with ``-march=native``."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as handle:
            return next((line for line in handle if line.startswith('flags')), '')
    except OSError:
        return ''


def _compiler():
    return os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')


def _flags():
    # no -ffast-math: its finite-math assumption breaks sigmoid at large |logits|;
    # -fno-trapping-math lets g++ turn the kernels' selects into vector blends
    return ['-O3', '-fno-math-errno', '-fno-trapping-math', '-fopenmp', '-march=native',
            '-shared', '-fPIC', '-std=c++17', f'-Wl,--version-script={EXPORTS}']


def library_path():
    """Where the built library for this source, MXNet, compiler and CPU is cached."""
    digest = hashlib.sha1()
    for part in [path.read_bytes() for path in (*SOURCES, *HEADERS, EXPORTS)] + [
            mx.__version__, str(_compiler()), ' '.join(_flags()), _cpu_signature()]:
        digest.update(part if isinstance(part, bytes) else part.encode())
    root = pathlib.Path(os.environ.get('OPENAFF_CACHE', pathlib.Path.home() / '.cache' / 'openaff'))
    return root / 'ops' / f'libopenaff_ops-{digest.hexdigest()[:16]}.so'


def build(target=None):
    """Compile the operators into ``target`` (default :func:`library_path`); return the path.

    Written to a temporary file and renamed, so concurrent builders (several workers on one
    host) never load a half-written library. Raises ``RuntimeError`` with the compiler's
    message on failure."""
    target = pathlib.Path(target or library_path())
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError('no C++ compiler found (set CXX or install g++)')
    lib_api = _mxnet_dir() / 'src' / 'lib_api.cc'
    include = _mxnet_dir() / 'include'
    if not lib_api.exists():
        raise RuntimeError(f'this mxnet has no extension API sources ({lib_api} missing)')
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(handle)
    logging.getLogger(__name__).info('building the native fusion operators into %s (once)',
                                     target)
    command = [compiler, *_flags(), f'-I{include}', *map(str, SOURCES), str(lib_api),
               '-o', partial]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        os.unlink(partial)
        raise RuntimeError(f'compiling the native operators failed:\n{done.stderr[-2000:]}')
    _write_fingerprint(target, partial)
    os.replace(partial, target)
    return target


def _fingerprint_path(library):
    return pathlib.Path(str(library) + '.sha256')


def _fingerprint(path):
    data = pathlib.Path(path).read_bytes()
    return f'{len(data)} {hashlib.sha256(data).hexdigest()}'


def _write_fingerprint(target, built):
    """Size and hash of the built library beside it, written (atomically) before the library."""
    handle, partial = tempfile.mkstemp(suffix='.sha256', dir=pathlib.Path(target).parent)
    with os.fdopen(handle, 'w') as out:
        out.write(_fingerprint(built))
    os.replace(partial, _fingerprint_path(target))


def intact(library):
    """Whether the cached library is the one that was built: loading a truncated or
    overwritten shared object can kill the process (SIGBUS), so it is checked first."""
    stamp = _fingerprint_path(library)
    try:
        return library.exists() and stamp.read_text().strip() == _fingerprint(library)
    except OSError:
        return False


def _enabled():
    return os.environ.get('OPENAFF_NATIVE_OPS', '1').lower() not in ('0', 'false', 'no', 'off')


def available():
    """Whether the native operators are loaded into MXNet (building them if needed).

    The first call builds or loads; later calls return the cached answer."""
    if 'loaded' not in _STATE:
        _STATE['loaded'] = _enabled() and _load()
    return _STATE['loaded']


def _load():
    path = library_path()
    try:
        if not intact(path):
            build(path)
        mx.library.load(str(path), verbose=False)
    except (RuntimeError, OSError, mx.base.MXNetError) as error:
        warnings.warn(f'openaff: native fusion operators unavailable, using the Python '
                      f'algebra instead: {error}', RuntimeWarning, stacklevel=3)
        return False
    return True
