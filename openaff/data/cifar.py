"""CIFAR-10 and CIFAR-100 from the official releases on local disk, with no network access.

Both official formats are read, unpacked or straight from their ``.tar.gz``: the python-pickle
release (``cifar-10-batches-py/``, ``cifar-100-python/``) and the binary release
(``cifar-10-batches-bin/``, ``cifar-100-binary/``). Only ``root=None`` goes through Gluon's own
CIFAR classes, which download into MXNet's dataset cache when the data is not there yet.
"""
import pickle
import tarfile
import zlib
from collections import namedtuple
from pathlib import Path, PurePosixPath

import mxnet as mx
import numpy as np
from mxnet.gluon.data import Dataset, vision
from mxnet.gluon.data.vision import transforms

from .errors import DatasetError, DatasetNotFoundError
from .registry import DatasetSpec, register_dataset

__all__ = ['CIFAR', 'CIFAR_MEAN', 'CIFAR_STD', 'CIFAR_URL', 'cifar_transforms', 'load_cifar']

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar.html'

_Release = namedtuple('_Release', 'folder archive train test')

_RELEASES = {
    'cifar10': {
        'python': _Release('cifar-10-batches-py', 'cifar-10-python.tar.gz',
                           tuple(f'data_batch_{i}' for i in range(1, 6)), ('test_batch',)),
        'binary': _Release('cifar-10-batches-bin', 'cifar-10-binary.tar.gz',
                           tuple(f'data_batch_{i}.bin' for i in range(1, 6)), ('test_batch.bin',)),
    },
    'cifar100': {
        'python': _Release('cifar-100-python', 'cifar-100-python.tar.gz', ('train',), ('test',)),
        'binary': _Release('cifar-100-binary', 'cifar-100-binary.tar.gz',
                           ('train.bin',), ('test.bin',)),
    },
}
_TITLES = {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100'}
# Keyed by (name, labels): class count, pickle key, (binary header bytes, label byte).
_NUM_CLASSES = {('cifar10', 'fine'): 10, ('cifar100', 'fine'): 100, ('cifar100', 'coarse'): 20}
_PICKLE_KEYS = {('cifar10', 'fine'): 'labels', ('cifar100', 'fine'): 'fine_labels',
                ('cifar100', 'coarse'): 'coarse_labels'}
_BINARY_LABELS = {('cifar10', 'fine'): (1, 0), ('cifar100', 'fine'): (2, 1),
                  ('cifar100', 'coarse'): (2, 0)}
_PIXELS = 3 * 32 * 32


def load_cifar(name, root=None, train=True, labels='fine'):
    """Load one split of CIFAR-10 or CIFAR-100.

    Parameters
    ----------
    name : {'cifar10', 'cifar100'}
    root : str or path-like, optional
        A directory holding the python or binary release, unpacked or as the official
        ``.tar.gz``; or the unpacked release folder itself; or the archive file itself.
        ``None`` uses Gluon's CIFAR classes and their default root, downloading if needed.
    train : bool
        The training split (50000 images) or the test split (10000).
    labels : {'fine', 'coarse'}
        For CIFAR-100, the 100 classes or the 20 superclasses.

    Returns
    -------
    (images, labels) : uint8 numpy array (N, 32, 32, 3) in HWC RGB, int32 numpy array (N,).

    Raises
    ------
    DatasetNotFoundError
        No release holding the split under ``root``, or (``root=None``) the download failed.
    ValueError
        Unknown ``name``/``labels``, ``'coarse'`` for CIFAR-10.
    DatasetError (a ``ValueError``)
        A malformed batch file (named), labels that do not match the images in number or
        range, or a split without any image: found here, before any training.
    """
    _check_name(name, labels)
    if root is None:
        return _load_from_gluon(name, train, labels)
    fmt, blobs = _read_release(name, Path(root).expanduser(), train)
    parts = [_parse(name, fmt, labels, blob, where) for where, blob in blobs]
    flat = np.concatenate([images for images, _ in parts])
    targets = np.concatenate([targets for _, targets in parts]).astype(np.int32)
    if not len(flat):
        # an empty test split would otherwise surface after a whole training epoch
        raise DatasetError(f"{', '.join(where for where, _ in blobs)}: the "
                           f"{'training' if train else 'test'} split holds no image")
    _check_label_range(targets, _NUM_CLASSES[name, labels], root)
    return _to_hwc(flat), targets


def _check_label_range(targets, classes, where):
    if len(targets) and (targets.min() < 0 or targets.max() >= classes):
        raise DatasetError(f'{where}: labels run from {targets.min()} to {targets.max()}, '
                           f'outside the {classes} classes 0..{classes - 1} of this dataset')


def _check_name(name, labels):
    if name not in _RELEASES:
        raise ValueError(f"unknown CIFAR dataset {name!r}: expected 'cifar10' or 'cifar100'")
    if labels not in ('fine', 'coarse'):
        raise ValueError(f"labels must be 'fine' or 'coarse', not {labels!r}")
    if (name, labels) not in _NUM_CLASSES:
        raise ValueError("coarse labels (the 20 superclasses) exist only for CIFAR-100")


def _load_from_gluon(name, train, labels):
    cls, kwargs = vision.CIFAR10, {}
    if name == 'cifar100':
        cls, kwargs = vision.CIFAR100, {'fine_label': labels == 'fine'}
    try:
        dataset = cls(train=train, **kwargs)
    # Anything going wrong in the download (no network, proxy, bad hash) means the same to the
    # user: the data is not there, so point them at --data-dir.
    except Exception as err:  # pylint: disable=broad-except
        raise DatasetNotFoundError(
            f"{_TITLES[name]} is not in MXNet's dataset cache and could not be downloaded "
            f'({type(err).__name__}: {err}); download it from {CIFAR_URL} and pass --data-dir'
        ) from err
    return dataset._data.asnumpy(), np.asarray(dataset._label, dtype=np.int32)


def _read_release(name, root, train):
    """(format, [(where, bytes), ...]) for the split's batch files of the first release found."""
    notes = []
    for fmt, release in _RELEASES[name].items():
        files = release.train if train else release.test
        for folder in (root / release.folder, root):
            missing = [file for file in files if not (folder / file).is_file()]
            if not missing:
                return fmt, [(str(folder / file), (folder / file).read_bytes()) for file in files]
            if _looks_like_release(folder, release):
                notes.append(f"{folder} lacks {', '.join(missing)}")
        archive = root if root.is_file() else root / release.archive
        if archive.name == release.archive and archive.is_file():
            return fmt, _read_archive(archive, release.folder, files)
    raise DatasetNotFoundError(_not_found_message(name, root, notes))


def _looks_like_release(folder, release):
    return folder.is_dir() and (folder.name == release.folder or any(
        (folder / file).is_file() for file in release.train + release.test))


def _not_found_message(name, root, notes):
    expected = ' or '.join(f'{release.folder}/ (or {release.archive})'
                           for release in _RELEASES[name].values())
    where = str(root) if root.exists() else f'{root} (no such directory)'
    extra = ''.join(f'; {note}' for note in notes)
    return (f'{_TITLES[name]} not found under {where}: expected {expected}{extra}; '
            f'download it from {CIFAR_URL} and pass --data-dir')


def _read_archive(archive, folder, files):
    """The members ``folder/file`` of a .tar.gz, read in one streaming pass, without extracting."""
    found = {}
    try:
        with tarfile.open(archive, 'r:*') as tar:
            for member in tar:
                key = PurePosixPath(member.name).parts[-2:]
                if member.isfile() and len(key) == 2 and key[0] == folder and key[1] in files:
                    found[key[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise DatasetNotFoundError(f'{archive} is not a readable .tar.gz ({err}); '
                                   f'download it again from {CIFAR_URL}') from err
    missing = [f'{folder}/{file}' for file in files if file not in found]
    if missing:
        raise DatasetNotFoundError(f"{archive} lacks {', '.join(missing)}; "
                                   f'download the official archive from {CIFAR_URL}')
    return [(f'{archive}:{folder}/{file}', found[file]) for file in files]


def _parse(name, fmt, labels, blob, where):
    """(flat uint8 images (N, 3072), labels) of one batch file."""
    if fmt == 'python':
        return _parse_pickle(blob, _PICKLE_KEYS[name, labels], where)
    header, column = _BINARY_LABELS[name, labels]
    return _parse_binary(blob, header, column, where)


def _parse_pickle(blob, label_key, where):
    # The official batches are Python 2 pickles of plain dicts, numpy arrays and lists.
    try:
        batch = pickle.loads(blob, encoding='bytes')
    except Exception as err:  # pylint: disable=broad-except  (any unpickling failure)
        raise DatasetError(f'{where} is not a CIFAR python batch (unpickling failed: '
                           f'{type(err).__name__}: {err})') from None
    if not isinstance(batch, dict):
        raise DatasetError(f'{where} is not a CIFAR python batch: it holds a '
                           f'{type(batch).__name__}, not a dict')
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if 'data' not in batch or label_key not in batch:
        raise DatasetError(f"{where} is not a CIFAR python batch: no 'data' or {label_key!r} key")
    try:
        data = np.asarray(batch['data'], dtype=np.uint8)
        targets = np.asarray(batch[label_key], dtype=np.int32).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DatasetError(f'{where}: its data or {label_key!r} are not arrays of numbers '
                           f'({err})') from None
    if data.size % _PIXELS:
        raise DatasetError(f"{where}: its 'data' holds {data.size} values, not a whole number "
                           f'of {_PIXELS}-value images')
    images = data.reshape(-1, _PIXELS)
    if len(images) != len(targets):
        # zipping them would pair images with the wrong labels, silently
        raise DatasetError(f'{where}: {len(images)} images but {len(targets)} labels '
                           f'({label_key!r})')
    return images, targets


def _parse_binary(blob, header, column, where):
    record = header + _PIXELS
    if len(blob) % record:
        raise DatasetError(f'{where} is not a CIFAR binary batch: {len(blob)} bytes is not a '
                           f'multiple of the {record}-byte record')
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, record)
    return records[:, header:], records[:, column].astype(np.int32)


def _to_hwc(flat):
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


class CIFAR(Dataset):
    """One split of CIFAR-10/100 as a Gluon dataset of ``(uint8 HWC NDArray, int label)``.

    Arguments are those of :func:`load_cifar`. Use ``.transform_first(cifar_transforms(...))``.

    Attributes
    ----------
    name, train, labels
        The arguments (``labels`` is ``'fine'`` or ``'coarse'``).
    images : uint8 numpy array (N, 32, 32, 3)
    targets : int32 numpy array (N,)
        The labels.
    num_classes : int
        10, 100, or 20 for CIFAR-100's coarse labels. The original code trained a 100-way head
        on coarse labels too; the head size is the caller's choice.
    classes : int
        Same as ``num_classes`` (the name the original training scripts used).
    """

    def __init__(self, name, root=None, train=True, labels='fine'):
        super().__init__()
        self.images, self.targets = load_cifar(name, root, train, labels)
        self.name, self.train, self.labels = name, train, labels
        self.num_classes = self.classes = _NUM_CLASSES[name, labels]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, idx):
        return mx.nd.array(self.images[idx], dtype='uint8'), int(self.targets[idx])


def cifar_transforms(train, auto_aug=False, mean=CIFAR_MEAN, std=CIFAR_STD, flip=True):
    """The original CIFAR recipe as a Gluon ``Compose`` over uint8 HWC images.

    Training: [AutoAugment('cifar10') when ``auto_aug``], random 32x32 crop of the image
    zero-padded by 4, [random horizontal flip when ``flip``], ToTensor, Normalize. Test:
    ToTensor, Normalize.
    """
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if not train:
        return transforms.Compose(tail)
    from gluoncv.data.transforms.block import RandomCrop  # gluoncv is slow to import
    head = []
    if auto_aug:
        from .autoaugment import AutoAugment
        head.append(AutoAugment('cifar10'))
    flips = [transforms.RandomFlipLeftRight()] if flip else []
    return transforms.Compose(head + [RandomCrop(32, pad=4)] + flips + tail)


def _cifar_splits(name):
    def splits(options):
        labels = options.labels if name == 'cifar100' else 'fine'
        val = CIFAR(name, options.data_dir, train=False, labels=labels) \
            .transform_first(cifar_transforms(False))
        if not options.with_train:
            return None, val
        train = CIFAR(name, options.data_dir, train=True, labels=labels) \
            .transform_first(cifar_transforms(options.augment, options.auto_aug))
        return train, val
    return splits

for _name in ('cifar10', 'cifar100'):
    # the fine labels set the head width: the released superclass networks kept 100 outputs
    register_dataset(DatasetSpec(
        _name, _NUM_CLASSES[_name, 'fine'], CIFAR_MEAN, CIFAR_STD, 32, _cifar_splits(_name),
        labels=tuple(labels for name, labels in _NUM_CLASSES if name == _name)))
