"""Tiny CIFAR datasets written in the official release formats (python pickles or binary
batches, unpacked or as the release's ``.tar.gz``), which the tests read back through
:mod:`openaff.data.cifar` and the training commands."""
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from openaff.data.cifar import _NUM_CLASSES, _PIXELS, _RELEASES

__all__ = ['write_cifar']


def write_cifar(root, name, fmt, images, labels, coarse=None, archive=False, *,
                test_images=None, test_labels=None, test_coarse=None):
    """Write a (tiny) dataset in an official CIFAR release format.

    Parameters
    ----------
    root : str or path-like
        Directory to write into (created if needed);
        :func:`openaff.data.cifar.load_cifar` reads it back.
    name : {'cifar10', 'cifar100'}
    fmt : {'python', 'binary'}
        The python-pickle release or the binary release layout.
    images : uint8 array (N, 32, 32, 3), HWC RGB
        The training split. CIFAR-10's is spread over the five ``data_batch_*`` files.
    labels : int array (N,)
        Class labels (fine labels for CIFAR-100).
    coarse : int array (N,), optional
        CIFAR-100 superclass labels; default ``labels // 5``. Must be None for CIFAR-10.
    archive : bool
        Write the official ``.tar.gz`` (e.g. ``cifar-10-python.tar.gz``) instead of the
        unpacked folder.
    test_images, test_labels, test_coarse : optional
        The test split; by default the training split is written as the test split too.

    Returns
    -------
    pathlib.Path of the folder or archive written.
    """
    if name not in _RELEASES or fmt not in ('python', 'binary'):
        raise ValueError(f"name must be 'cifar10' or 'cifar100' and fmt 'python' or 'binary', "
                         f'not {name!r}, {fmt!r}')
    release = _RELEASES[name][fmt]
    train = _split_arrays(name, images, labels, coarse)
    test = train if test_images is None else _split_arrays(
        name, test_images, test_labels, test_coarse)
    files = (_encode_split(name, fmt, release.train, train)
             + _encode_split(name, fmt, release.test, test))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        return _write_tar(root / release.archive, release.folder, files)
    folder = root / release.folder
    folder.mkdir(exist_ok=True)
    for file, blob in files:
        (folder / file).write_bytes(blob)
    return folder


def _split_arrays(name, images, labels, coarse):
    """Validated (flat uint8 images (N, 3072), fine labels, coarse labels or None)."""
    images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64).reshape(-1)
    if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
        raise ValueError(f'expected uint8 images (N, 32, 32, 3) and N labels, got '
                         f'{images.dtype} {images.shape} and {labels.shape}')
    if name == 'cifar10' and coarse is not None:
        raise ValueError('coarse labels exist only for CIFAR-100')
    if name == 'cifar100':
        coarse = labels // 5 if coarse is None else np.asarray(coarse, dtype=np.int64).reshape(-1)
        _check_range(coarse, 20, 'coarse labels')
    _check_range(labels, _NUM_CLASSES[name, 'fine'], 'labels')
    return images.transpose(0, 3, 1, 2).reshape(-1, _PIXELS), labels, coarse


def _check_range(values, count, what):
    if len(values) and (values.min() < 0 or values.max() >= count):
        raise ValueError(f'{what} must lie in [0, {count}), got {values.min()}..{values.max()}')


def _encode_split(name, fmt, files, split):
    """[(file name, bytes)], the split spread evenly over the release's batch files."""
    chunks = np.array_split(np.arange(len(split[0])), len(files))
    encode = _encode_pickle if fmt == 'python' else _encode_binary
    return [(file, encode(name, file, [None if part is None else part[rows] for part in split]))
            for file, rows in zip(files, chunks)]


def _encode_pickle(name, file, split):
    flat, labels, coarse = split
    batch = {b'batch_label': file.encode(), b'data': flat,
             b'filenames': [f'{file}_{i:05d}.png'.encode() for i in range(len(flat))]}
    if name == 'cifar10':
        batch[b'labels'] = labels.tolist()
    else:
        batch[b'fine_labels'], batch[b'coarse_labels'] = labels.tolist(), coarse.tolist()
    return pickle.dumps(batch, protocol=2)


def _encode_binary(name, file, split):  # pylint: disable=unused-argument
    flat, labels, coarse = split
    header = [labels] if name == 'cifar10' else [coarse, labels]
    columns = [column.astype(np.uint8).reshape(-1, 1) for column in header]
    return np.concatenate(columns + [flat], axis=1).tobytes()


def _write_tar(path, folder, files):
    with tarfile.open(path, 'w:gz') as tar:
        for file, blob in files:
            info = tarfile.TarInfo(f'{folder}/{file}')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path
