"""ImageNet input pipelines that never touch the network: RecordIO files, image folders, or
synthetic data.

Every loader is an iterable of ``(data, label)`` batches, ``data`` an NCHW float32 NDArray
normalised with the ImageNet mean and std, with ``len()`` giving the batches per epoch; it is
iterated once per epoch. Training loaders drop the last incomplete batch; validation loaders
keep every sample.
"""
import math
import os
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet.gluon.data import DataLoader, Dataset
from mxnet.gluon.data.vision import transforms

from .errors import DatasetError, DatasetNotFoundError, UnreadableImageError
from .registry import DatasetSpec, register_dataset
from .sampler import ShardSampler

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'ImageFolder', 'RecordLoader', 'ShardSampler',
           'class_folders', 'folder_loaders', 'folder_val_loader', 'imagenet_transforms',
           'make_rec', 'rec_loaders', 'rec_val_loader', 'synthetic_loaders',
           'validation_transform']

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


def _rec_paths(*paths):
    """The paths expanded; ``DatasetNotFoundError`` naming those that are not files."""
    paths = [Path(path).expanduser() for path in paths]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"ImageNet RecordIO files not found: {', '.join(missing)}; create them with "
            f'MXNet\'s tools/im2rec.py (or openaff.data.imagenet.make_rec) and pass their paths')
    return paths


def _rec_common(batch_size, input_size, num_workers, num_parts, part_index, dtype):
    return dict(batch_size=batch_size, data_shape=(3, input_size, input_size),
                preprocess_threads=num_workers, num_parts=num_parts, part_index=part_index,
                dtype=dtype, round_batch=False,
                mean_r=_MEAN_RGB[0], mean_g=_MEAN_RGB[1], mean_b=_MEAN_RGB[2],
                std_r=_STD_RGB[0], std_g=_STD_RGB[1], std_b=_STD_RGB[2])


def _rec_val(rec_val, rec_val_idx, common, input_size, crop_ratio, num_parts, part_index):
    val = mx.io.ImageRecordIter(
        path_imgrec=str(rec_val), path_imgidx=str(rec_val_idx), shuffle=False,
        resize=_resize_for(input_size, crop_ratio), **common)
    size = _part_size(_count_records(rec_val_idx), num_parts, part_index)
    return RecordLoader(val, size, common['batch_size'], drop_last=False)


def rec_val_loader(rec_val, rec_val_idx, batch_size, input_size=224, crop_ratio=0.875,
                   num_workers=4, num_parts=1, part_index=0, dtype='float32'):
    """The validation loader of :func:`rec_loaders` alone: evaluation needs no training file.

    Returns
    -------
    :class:`RecordLoader`
    """
    rec, idx = _rec_paths(rec_val, rec_val_idx)
    check_record_file(rec, idx)
    common = _rec_common(batch_size, input_size, num_workers, num_parts, part_index, dtype)
    return _rec_val(rec, idx, common, input_size, crop_ratio, num_parts, part_index)


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
    paths = _rec_paths(rec_train, rec_train_idx, rec_val, rec_val_idx)
    for rec, idx in ((paths[0], paths[1]), (paths[2], paths[3])):
        check_record_file(rec, idx)
    common = _rec_common(batch_size, input_size, num_workers, num_parts, part_index, dtype)
    train = mx.io.ImageRecordIter(
        path_imgrec=str(paths[0]), path_imgidx=str(paths[1]), shuffle=True, seed=seed,
        seed_aug=seed, rand_mirror=True, random_resized_crop=True,
        max_aspect_ratio=4. / 3., min_aspect_ratio=3. / 4., max_random_area=1,
        min_random_area=0.08, brightness=_JITTER, saturation=_JITTER, contrast=_JITTER,
        pca_noise=_LIGHTING, **common)
    val = _rec_val(paths[2], paths[3], common, input_size, crop_ratio, num_parts, part_index)
    train_size = _part_size(_count_records(paths[1]), num_parts, part_index)
    return RecordLoader(train, train_size, batch_size, drop_last=True), val


def _count_records(idx_path):
    with open(idx_path, encoding='ascii') as idx:
        return sum(1 for line in idx if line.strip())


def _part_size(count, num_parts, part_index):
    """Records in one part as dmlc's indexed RecordIO splitter cuts them: ceil-sized parts."""
    step = -(-count // num_parts)
    return max(0, min(count, step * (part_index + 1)) - step * part_index)


def validation_transform(input_size=224, crop_ratio=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The evaluation geometry and scaling as a Gluon ``Compose`` over a uint8 HWC RGB image:
    the short side resized (OpenCV, bilinear) to ``ceil(input_size / crop_ratio)``, the centre
    ``input_size`` square, ToTensor, Normalize(``mean``, ``std``). Evaluation and Grad-CAM
    both use it, so a photo reaches the network as the same tensor in either."""
    return transforms.Compose(
        [transforms.Resize(_resize_for(input_size, crop_ratio), keep_ratio=True),
         transforms.CenterCrop(input_size), transforms.ToTensor(),
         transforms.Normalize(mean, std)])


def imagenet_transforms(train, input_size=224, crop_ratio=0.875, auto_aug=False):
    """gluoncv's ImageNet recipe as a Gluon ``Compose`` over uint8 HWC RGB images.

    Training: [AutoAugment('imagenet') when ``auto_aug``], RandomResizedCrop, random flip,
    colour jitter 0.4, lighting noise 0.1, ToTensor, Normalize. Validation:
    :func:`validation_transform`.
    """
    if not train:
        return validation_transform(input_size, crop_ratio)
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    head = []
    if auto_aug:
        from .autoaugment import AutoAugment
        head.append(AutoAugment('imagenet'))
    return transforms.Compose(head + [
        transforms.RandomResizedCrop(input_size), transforms.RandomFlipLeftRight(),
        transforms.RandomColorJitter(brightness=_JITTER, contrast=_JITTER, saturation=_JITTER),
        transforms.RandomLighting(_LIGHTING)] + tail)


_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')  # what Gluon's ImageFolderDataset reads


def _listing(folder):
    """The sorted entries of ``folder``; one line naming it when it cannot be read."""
    try:
        return sorted(os.listdir(folder))
    except OSError as err:
        raise DatasetError(f'{folder}: cannot list this folder '
                           f'({err.strerror or type(err).__name__})') from None


def class_folders(root):
    """The sorted class names of ``root/<class>/``: every sub-folder, as Gluon's
    ``ImageFolderDataset`` numbers them (an empty class keeps its number)."""
    return [name for name in _listing(root) if os.path.isdir(os.path.join(root, name))]


class ImageFolder(Dataset):
    """The images of ``root/<class>/*.{jpg,jpeg,png}`` as ``(uint8 HWC RGB NDArray, label)``.

    Unlike Gluon's ``ImageFolderDataset``, the labels can come from another split: with
    ``classes`` (the training split's :func:`class_folders`) a class is numbered by its place
    there, so a validation split that lacks some classes is still scored against the right
    ones; a folder that is not among ``classes`` is refused. An image that cannot be decoded
    raises :class:`~openaff.data.errors.UnreadableImageError` naming the file.

    Attributes
    ----------
    synsets : list of str
        Class names; ``synsets[label]`` names a label.
    items : list of (path, label)
    """

    def __init__(self, root, classes=None):
        super().__init__()
        self._root = os.path.expanduser(str(root))
        own = class_folders(self._root)
        self.synsets = list(own if classes is None else classes)
        number = {name: label for label, name in enumerate(self.synsets)}
        unknown = [name for name in own if name not in number]
        if unknown:
            shown = ', '.join(unknown[:5]) + (f' and {len(unknown) - 5} more'
                                              if len(unknown) > 5 else '')
            raise DatasetError(f'{self._root}: class folder(s) {shown} are not classes of the '
                               f'training split, whose {len(self.synsets)} classes number the '
                               f'labels')
        self.items = [(os.path.join(self._root, name, file), number[name]) for name in own
                      for file in _listing(os.path.join(self._root, name))
                      if os.path.splitext(file)[1].lower() in _IMAGE_EXTENSIONS]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        try:
            with open(path, 'rb') as handle:
                encoded = handle.read()
            image = mx.image.imdecode(encoded, flag=1)
        except OSError as err:
            raise UnreadableImageError(f'{path}: cannot read this image '
                                       f'({err.strerror or type(err).__name__})') from None
        except mx.base.MXNetError:
            raise UnreadableImageError(f'{path}: not an image OpenCV can decode (corrupt or '
                                       f'not a JPEG/PNG); remove or replace it') from None
        return image, label


def _split_folders(root, splits):
    root = Path(root).expanduser()
    missing = [str(root / split) for split in splits if not (root / split).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"ImageNet image folders not found: {', '.join(missing)}; expected "
            f'{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG, pass their parent')
    return root


def _checked_split(folder, classes=None):
    dataset = ImageFolder(folder, classes)
    if not len(dataset):
        raise DatasetError(f'{folder}: no image (.jpg, .jpeg, .png) in its class folders')
    return dataset


def _val_loader(dataset, batch_size, input_size, crop_ratio, num_workers, num_parts,
                part_index):
    sampler = ShardSampler(len(dataset), num_parts, part_index, shuffle=False, even=False)
    return DataLoader(dataset.transform_first(imagenet_transforms(False, input_size, crop_ratio)),
                      batch_size=batch_size, sampler=sampler, last_batch='keep',
                      num_workers=num_workers)


def folder_loaders(root, batch_size, input_size=224, crop_ratio=0.875, num_workers=4,
                   auto_aug=False, num_parts=1, part_index=0):
    """Training and validation loaders over ``root/train/<class>/*`` and ``root/val/<class>/*``.

    Images are decoded by :class:`ImageFolder` and transformed by :func:`imagenet_transforms`.
    The validation labels are numbered by the training split's classes (a validation class
    unknown to training is refused). With ``num_parts > 1`` each part reads a disjoint share of
    each split (see :class:`ShardSampler`); training parts are equal-sized and drop their last
    incomplete batch.

    Raises
    ------
    DatasetNotFoundError
        ``root/train`` or ``root/val`` is not a folder.
    DatasetError
        A split holds no image, a folder cannot be listed, or a validation class is not a
        training class: found here, before any training.

    Returns
    -------
    (train, val) : gluon ``DataLoader``
    """
    root = _split_folders(root, ('train', 'val'))
    train_set = _checked_split(root / 'train')
    val_set = _checked_split(root / 'val', train_set.synsets)
    sampler = ShardSampler(len(train_set), num_parts, part_index, shuffle=True, even=True)
    train = DataLoader(
        train_set.transform_first(imagenet_transforms(True, input_size, crop_ratio, auto_aug)),
        batch_size=batch_size, sampler=sampler, last_batch='discard', num_workers=num_workers)
    return train, _val_loader(val_set, batch_size, input_size, crop_ratio, num_workers,
                              num_parts, part_index)


def folder_val_loader(root, batch_size, input_size=224, crop_ratio=0.875, num_workers=4,
                      num_parts=1, part_index=0):
    """The validation loader of :func:`folder_loaders` alone, over ``root/val/<class>/*``.

    Labels are numbered by ``root/train``'s class folders when it is there (as in training);
    without it, by the validation split's own sorted classes, right only when it holds every
    class. Raises as :func:`folder_loaders` does.

    Returns
    -------
    gluon ``DataLoader``
    """
    root = _split_folders(root, ('val',))
    classes = class_folders(root / 'train') if (root / 'train').is_dir() else None
    val_set = _checked_split(root / 'val', classes)
    return _val_loader(val_set, batch_size, input_size, crop_ratio, num_workers, num_parts,
                       part_index)


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


def _imagenet_splits(options):
    """Image-folder splits under ``options.data_dir`` (``train/<class>/*``, ``val/<class>/*``);
    the record-file and synthetic readers stay with the loaders above."""
    root = Path(os.path.expanduser(options.data_dir or '~/.mxnet/datasets/imagenet'))
    size = options.input_size or 224
    root = _split_folders(root, ('train', 'val') if options.with_train else ('val',))
    classes = class_folders(root / 'train') if (root / 'train').is_dir() else None
    val = _checked_split(root / 'val', classes).transform_first(imagenet_transforms(False, size))
    if not options.with_train:
        return None, val
    train = _checked_split(root / 'train').transform_first(
        imagenet_transforms(options.augment, size, auto_aug=options.auto_aug))
    return train, val


register_dataset(DatasetSpec('imagenet', 1000, IMAGENET_MEAN, IMAGENET_STD, 224,
                             _imagenet_splits))
