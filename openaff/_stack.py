"""Refuse, with the fix in the message, a NumPy that breaks MXNet 1.9.1, and environment
variables that would abort MXNet's import."""
import os
import re
import sys
from importlib import metadata

MAX_NUMPY = (1, 24)  # mxnet 1.9.1 uses np.bool, removed in numpy 1.24


def _version_tuple(text):
    parts = []
    for piece in text.split('.')[:2]:
        digits = ''.join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_stack(numpy_version=None):
    """Raise ``ImportError`` if the installed numpy is too new for mxnet 1.9.1."""
    if numpy_version is None:
        try:
            numpy_version = metadata.version('numpy')
        except metadata.PackageNotFoundError:
            raise ImportError('openaff needs numpy<1.24 and mxnet 1.9.1: '
                              'pip install "openaff[cpu]"') from None
    if _version_tuple(numpy_version) >= MAX_NUMPY:
        raise ImportError(
            f'numpy {numpy_version} is installed, but mxnet 1.9.1 needs numpy<1.24 (it uses '
            f'np.bool, removed in 1.24). Fix: pip install "numpy<1.24"')


# MXNet 1.9.1 parses these when it is imported and aborts the process (SIGABRT, exit 134) on a
# value it cannot parse; leading spaces and negative integers it accepts
INTEGER_VARIABLES = ('OMP_NUM_THREADS', 'MXNET_OMP_MAX_THREADS', 'MXNET_CPU_WORKER_NTHREADS',
                     'MXNET_CPU_PRIORITY_NTHREADS', 'MXNET_GPU_WORKER_NTHREADS')
BOOLEAN_VARIABLES = ('MXNET_MKLDNN_ENABLED', 'MXNET_USE_OPERATOR_TUNING')
_INTEGER = re.compile(r'\s*[+-]?\d+\s*')
_BOOLEANS = ('0', '1', 'true', 'false')


def environment_problem(environ=None):
    """The first MXNet environment variable whose value would abort MXNet's import, as a
    sentence, or None."""
    environ = os.environ if environ is None else environ
    for name in INTEGER_VARIABLES:
        value = environ.get(name, '')
        if value and not _INTEGER.fullmatch(value):
            return f'{name}={value!r}: MXNet reads it as a whole number and would abort'
    for name in BOOLEAN_VARIABLES:
        value = environ.get(name, '')
        if value and value.strip().lower() not in _BOOLEANS:
            return f'{name}={value!r}: MXNet reads it as 0/1 (or true/false) and would abort'
    return None


def check_environment():
    """Exit with one ``error:`` line (status 2) instead of letting MXNet abort the process
    on an environment variable it cannot parse. Runs before ``import mxnet``."""
    if 'mxnet' in sys.modules:
        return
    problem = environment_problem()
    if problem:
        sys.stderr.write(f'error: {problem}; unset it or give a number\n')
        raise SystemExit(2)
