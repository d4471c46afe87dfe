"""ImageNet input pipelines that never touch the network: RecordIO files, image folders, or
synthetic data.

Every loader is an iterable of ``(data, label)`` batches, ``data`` an NCHW float32 NDArray
normalised with the ImageNet mean and std, with ``len()`` giving the batches per epoch; it is
iterated once per epoch. Training loaders drop the last incomplete batch; validation loaders
keep every sample.
"""
import math
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet.gluon.data import DataLoader
from mxnet.gluon.data.vision import ImageFolderDataset, transforms

from .errors import DatasetNotFoundError
from .sampler import ShardSampler

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'RecordLoader', 'ShardSampler', 'folder_loaders',
           'imagenet_transforms', 'make_rec', 'rec_loaders', 'synthetic_loaders']

# where the original scripts looked for the ImageNet record files
DEFAULT_REC_FILES = {name: f'~/.mxnet/datasets/imagenet/rec/{file}' for name, file in (
    ('rec_train', 'train.rec'), ('rec_train_idx', 'train.idx'), ('rec_val', 'val.rec'),
    ('rec_val_idx', 'val.idx'))}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_RGB = (123.68, 116.779, 103.939)
_STD_RGB = (58.393, 57.12, 57.375)
_JITTER = 0.4
_LIGHTING = 0.1


def _resize_for(input_size, crop_ratio):
    return int(math.ceil(input_size / crop_ratio))


class RecordLoader:
    """An ``mx.io`` data iterator as a re-iterable loader of ``(data, label)`` batches.

    Each ``iter()`` resets the iterator and runs one epoch. The last batch is cut to the samples
    that are left (or skipped with ``drop_last``): ``ImageRecordIter`` fills it with stale
    memory and, with ``round_batch=False``, reports no padding, so the loader counts itself.

    Parameters
    ----------
    data_iter : mx.io.DataIter
        Created with ``round_batch=False``, so every epoch starts at the first sample.
    num_samples : int
        Samples the iterator yields per epoch (its part, when sharded).
    batch_size : int
    drop_last : bool
    """

    def __init__(self, data_iter, num_samples, batch_size, drop_last):
        self._iter = data_iter
        self._sizes = [batch_size] * (num_samples // batch_size)
        if num_samples % batch_size and not drop_last:
            self._sizes.append(num_samples % batch_size)

    def __len__(self):
        return len(self._sizes)

    def __iter__(self):
        self._iter.reset()
        for size, batch in zip(self._sizes, self._iter):
            data, label = batch.data[0], batch.label[0]
            yield (data, label) if size == data.shape[0] else (data[:size], label[:size])


_RECORD_MAGIC = 0xced7230a  # dmlc RecordIO: every record starts with it


def check_record_file(rec, idx, samples=64):
    """``ValueError`` unless ``idx`` indexes RecordIO records of ``rec`` holding images:
    MXNet's ImageRecordIter crashes the process on a file that is not one. Checks the magic
    number at up to ``samples`` offsets spread over the index, and decodes the first image."""
    size = Path(rec).stat().st_size
    try:
        offsets = [int(line.split('\t')[1]) for line in Path(idx).read_text().splitlines()
                   if line.strip()]
    except (IndexError, ValueError, UnicodeDecodeError):
        raise ValueError(f'{idx} is not a RecordIO index (lines of "key<TAB>offset")') from None
    if not offsets:
        raise ValueError(f'{idx} indexes no record')
    step = max(1, len(offsets) // samples)
    with open(rec, 'rb') as handle:
        for offset in offsets[::step] + offsets[-1:]:
            handle.seek(offset)
            head = handle.read(4)
            if offset >= size or len(head) < 4 or int.from_bytes(head, 'little') != _RECORD_MAGIC:
                raise ValueError(f'{rec} is not a RecordIO file indexed by {idx} (no record at '
                                 f'offset {offset})')
    reader = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), 'r')
    try:
        _, image = mx.recordio.unpack(reader.read_idx(reader.keys[0]))
        mx.image.imdecode(image)
    except Exception as err:  # pylint: disable=broad-except  (MXNetError, struct.error, ...)
        raise ValueError(f'{rec}: its first record is not an image ({type(err).__name__})') \
            from None
    finally:
        reader.close()


def rec_loaders(rec_train, rec_train_idx, rec_val, rec_val_idx, batch_size, input_size=224,
                crop_ratio=0.875, num_workers=4, num_parts=1, part_index=0, dtype='float32',
                seed=0):
    """Training and validation loaders over ImageNet RecordIO files (``im2rec`` output).

    Configured as the original ``train_imagenet.py --use-rec``: training takes Inception-style
    random resized crops (area 0.08..1, aspect 3/4..4/3), brightness/contrast/saturation jitter
    0.4, PCA lighting noise 0.1, random mirror and shuffling; validation resizes the short side to
    ``ceil(input_size / crop_ratio)`` and takes the centre crop. Both normalise with the ImageNet
    mean and std on the 0..255 scale.

    Parameters
    ----------
    rec_train, rec_train_idx, rec_val, rec_val_idx : str or path-like
        The ``.rec`` files and their ``.idx`` indexes.
    batch_size : int
        Per loader (per worker when sharded).
    input_size : int
        Side of the square crops.
    crop_ratio : float
        Validation centre crop over resized short side.
    num_workers : int
        Decoding threads of each iterator.
    num_parts, part_index : int
        Read only the ``part_index``-th of ``num_parts`` contiguous parts (one per worker).
    dtype : str
        Data type of the batches (``'float32'``, ``'float16'``).
    seed : int
        Seed of the shuffling and of the augmentations.

    Returns
    -------
    (train, val) : :class:`RecordLoader`
    """
    paths = [Path(path).expanduser() for path in (rec_train, rec_train_idx, rec_val, rec_val_idx)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"ImageNet RecordIO files not found: {', '.join(missing)}; create them with "
            f'MXNet\'s tools/im2rec.py (or openaff.data.imagenet.make_rec) and pass their paths')
    for rec, idx in ((paths[0], paths[1]), (paths[2], paths[3])):
        check_record_file(rec, idx)
    common = dict(batch_size=batch_size, data_shape=(3, input_size, input_size),
                  preprocess_threads=num_workers, num_parts=num_parts, part_index=part_index,
                  dtype=dtype, round_batch=False,
                  mean_r=_MEAN_RGB[0], mean_g=_MEAN_RGB[1], mean_b=_MEAN_RGB[2],
                  std_r=_STD_RGB[0], std_g=_STD_RGB[1], std_b=_STD_RGB[2])
    train = mx.io.ImageRecordIter(
        path_imgrec=str(paths[0]), path_imgidx=str(paths[1]), shuffle=True, seed=seed,
        seed_aug=seed, rand_mirror=True, random_resized_crop=True,
        max_aspect_ratio=4. / 3., min_aspect_ratio=3. / 4., max_random_area=1,
        min_random_area=0.08, brightness=_JITTER, saturation=_JITTER, contrast=_JITTER,
        pca_noise=_LIGHTING, **common)
    val = mx.io.ImageRecordIter(
        path_imgrec=str(paths[2]), path_imgidx=str(paths[3]), shuffle=False,
        resize=_resize_for(input_size, crop_ratio), **common)
    sizes = [_part_size(_count_records(path), num_parts, part_index) for path in paths[1::2]]
    return (RecordLoader(train, sizes[0], batch_size, drop_last=True),
            RecordLoader(val, sizes[1], batch_size, drop_last=False))


def _count_records(idx_path):
    with open(idx_path, encoding='ascii') as idx:
        return sum(1 for line in idx if line.strip())


def _part_size(count, num_parts, part_index):
    """Records in one part as dmlc's indexed RecordIO splitter cuts them: ceil-sized parts."""
    step = -(-count // num_parts)
    return max(0, min(count, step * (part_index + 1)) - step * part_index)


def imagenet_transforms(train, input_size=224, crop_ratio=0.875, auto_aug=False):
    """gluoncv's ImageNet recipe as a Gluon ``Compose`` over uint8 HWC RGB images.

    Training: [AutoAugment('imagenet') when ``auto_aug``], RandomResizedCrop, random flip,
    colour jitter 0.4, lighting noise 0.1, ToTensor, Normalize. Validation: resize the short side
    to ``ceil(input_size / crop_ratio)``, centre crop, ToTensor, Normalize.
    """
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if not train:
        return transforms.Compose(
            [transforms.Resize(_resize_for(input_size, crop_ratio), keep_ratio=True),
             transforms.CenterCrop(input_size)] + tail)
    head = []
    if auto_aug:
        from .autoaugment import AutoAugment
        head.append(AutoAugment('imagenet'))
    return transforms.Compose(head + [
        transforms.RandomResizedCrop(input_size), transforms.RandomFlipLeftRight(),
        transforms.RandomColorJitter(brightness=_JITTER, contrast=_JITTER, saturation=_JITTER),
        transforms.RandomLighting(_LIGHTING)] + tail)


def folder_loaders(root, batch_size, input_size=224, crop_ratio=0.875, num_workers=4,
                   auto_aug=False, num_parts=1, part_index=0):
    """Training and validation loaders over ``root/train/<class>/*`` and ``root/val/<class>/*``.

    Images are decoded by ``ImageFolderDataset`` and transformed by :func:`imagenet_transforms`.
    With ``num_parts > 1`` each part reads a disjoint share of each split (see
    :class:`ShardSampler`); training parts are equal-sized and drop their last incomplete batch.

    Returns
    -------
    (train, val) : gluon ``DataLoader``
    """
    root = Path(root).expanduser()
    missing = [str(root / split) for split in ('train', 'val') if not (root / split).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"ImageNet image folders not found: {', '.join(missing)}; expected "
            f'{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG, pass their parent')
    loaders = []
    for train in (True, False):
        dataset = ImageFolderDataset(str(root / ('train' if train else 'val')))
        sampler = ShardSampler(len(dataset), num_parts, part_index, shuffle=train, even=train)
        dataset = dataset.transform_first(
            imagenet_transforms(train, input_size, crop_ratio, auto_aug))
        loaders.append(DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                  last_batch='discard' if train else 'keep',
                                  num_workers=num_workers))
    return tuple(loaders)


class _FixedBatches:
    """The same list of batches every epoch."""

    def __init__(self, batches):
        self._batches = batches

    def __len__(self):
        return len(self._batches)

    def __iter__(self):
        return iter(self._batches)


def synthetic_loaders(batch_size, input_size=224, num_classes=1000, train_batches=8,
                      val_batches=2, seed=0):
    """Training and validation loaders of fixed random batches, for smoke runs and tests.

    Data are standard-normal float32 NCHW images and labels are float32 class indices (as
    ``mx.io.ImageRecordIter`` gives), drawn once from ``numpy.random.RandomState(seed)``.
    """
    rng = np.random.RandomState(seed)

    def batches(count):
        return _FixedBatches([
            (mx.nd.array(rng.standard_normal((batch_size, 3, input_size, input_size)),
                         dtype='float32'),
             mx.nd.array(rng.randint(0, num_classes, batch_size), dtype='float32'))
            for _ in range(count)])

    return batches(train_batches), batches(val_batches)


def make_rec(prefix, images, labels, quality=90):
    """Write ``prefix.rec`` and ``prefix.idx`` (as ``im2rec`` does) from RGB images.

    Parameters
    ----------
    prefix : str or path-like
    images : sequence of uint8 (H, W, 3) RGB arrays
        Sizes may differ. Stored as JPEG; readers (``ImageRecordIter``,
        ``ImageRecordDataset``) give RGB back.
    labels : sequence of int
    quality : int
        JPEG quality.

    Returns
    -------
    (rec_path, idx_path) : str
    """
    if len(images) != len(labels):
        raise ValueError(f'{len(images)} images but {len(labels)} labels')
    rec_path, idx_path = f'{prefix}.rec', f'{prefix}.idx'
    record = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, 'w')
    try:
        for index, (image, label) in enumerate(zip(images, labels)):
            header = mx.recordio.IRHeader(0, float(label), index, 0)
            # pack_img encodes with OpenCV, which takes BGR.
            bgr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., ::-1])
            record.write_idx(index, mx.recordio.pack_img(header, bgr, quality=quality))
    finally:
        record.close()
    return rec_path, idx_path
