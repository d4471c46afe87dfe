"""Refuse, with the fix in the message, a NumPy that breaks MXNet 1.9.1."""
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
