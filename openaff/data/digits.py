"""scikit-learn's bundled handwritten digits as a small real dataset shaped like CIFAR.

The 1797 8x8 images (values 0..16, 10 classes) ship with scikit-learn, so training runs and tests
can use real data without any download. They are scaled to 0..255, resized to 32x32 with
Pillow's bilinear filter and replicated to three channels; a fixed stratified split holds out
450 of them (1347 train / 450 test).
"""
from functools import cache, lru_cache

import mxnet as mx
import numpy as np
from mxnet.gluon.data import Dataset
from PIL import Image

from .registry import DatasetSpec, register_dataset

__all__ = ['DIGITS_MEAN', 'DIGITS_STD', 'DIGITS_TEST_SIZE', 'Digits', 'digits_transforms',
           'load_digits_split']

DIGITS_TEST_SIZE = 450
# Per-channel mean and std of the 32x32 training split on the [0, 1] scale (the three channels
# are copies); tests recompute them from the data.
DIGITS_MEAN = (0.3055, 0.3055, 0.3055)
DIGITS_STD = (0.3234, 0.3234, 0.3234)
DIGITS_CLASSES = 10


def load_digits_split(train=True, size=32):
    """One split of the digits as CIFAR-like arrays.

    Parameters
    ----------
    train : bool
        The 1347-image training split or the 450-image test split; the split is fixed
        (stratified by class, ``random_state=0``).
    size : int
        Side of the resized square images.

    Returns
    -------
    (images, labels) : uint8 numpy array (N, size, size, 3) HWC, int32 numpy array (N,).
    """
    images, labels = _resized_digits(size)
    rows = _split_rows()[0 if train else 1]
    return images[rows], labels[rows]


@cache
def _split_rows():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    labels = load_digits().target
    rows = np.arange(len(labels))
    train, test = train_test_split(rows, test_size=DIGITS_TEST_SIZE, stratify=labels,
                                   random_state=0)
    return np.sort(train), np.sort(test)


@lru_cache(maxsize=4)
def _resized_digits(size):
    from sklearn.datasets import load_digits
    digits = load_digits()
    scaled = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    resized = np.stack([_resize(image, size) for image in scaled])
    images = np.repeat(resized[..., None], 3, axis=3)
    images.setflags(write=False)
    labels = digits.target.astype(np.int32)
    labels.setflags(write=False)
    return images, labels


def _resize(image, size):
    bilinear = getattr(Image, 'Resampling', Image).BILINEAR
    return np.asarray(Image.fromarray(image, mode='L').resize((size, size), bilinear))


class Digits(Dataset):
    """One split of the digits as a Gluon dataset of ``(uint8 HWC NDArray, int label)``.

    Arguments are those of :func:`load_digits_split`. Use
    ``.transform_first(digits_transforms(...))``.

    Attributes
    ----------
    images : uint8 numpy array (N, size, size, 3)
    targets : int32 numpy array (N,)
    num_classes, classes : int
        10.
    """

    def __init__(self, train=True, size=32):
        super().__init__()
        self.images, self.targets = load_digits_split(train, size)
        self.train = train
        self.num_classes = self.classes = DIGITS_CLASSES

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, idx):
        return mx.nd.array(self.images[idx], dtype='uint8'), int(self.targets[idx])


def digits_transforms(train, auto_aug=False):
    """The CIFAR recipe (:func:`~openaff.data.cifar.cifar_transforms`) with the digits'
    normalisation and without flips (digits are not mirror-symmetric)."""
    from .cifar import cifar_transforms
    return cifar_transforms(train, auto_aug, DIGITS_MEAN, DIGITS_STD, flip=False)


def _digits_splits(options):
    size = options.input_size or 32  # a network trained at another size is judged at its own
    val = Digits(train=False, size=size).transform_first(digits_transforms(False))
    if not options.with_train:
        return None, val
    return Digits(train=True, size=size).transform_first(
        digits_transforms(options.augment, options.auto_aug)), val


register_dataset(DatasetSpec('digits', DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD, 32,
                             _digits_splits))
