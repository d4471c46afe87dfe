"""Tests for openaff.data: CIFAR in its official formats, the digits, the ImageNet pipelines.

Every dataset is made here, tiny; nothing is downloaded.
"""
import pickle
import sys
import types

import mxnet as mx
import numpy as np
import pytest
from cifar_files import write_cifar
from mxnet.gluon.data import vision
from PIL import Image

from openaff.data import cifar, digits
from openaff.data.cifar import CIFAR, cifar_transforms, load_cifar
from openaff.data.digits import (
    DIGITS_MEAN,
    DIGITS_STD,
    Digits,
    digits_transforms,
    load_digits_split,
)
from openaff.data.errors import DatasetNotFoundError
from openaff.data.imagenet import (
    ShardSampler,
    folder_loaders,
    imagenet_transforms,
    make_rec,
    rec_loaders,
    synthetic_loaders,
)

FORMATS = [(name, fmt, archive) for name in ('cifar10', 'cifar100')
           for fmt in ('python', 'binary') for archive in (False, True)]
RELEASES = {  # (name, fmt): (unpacked folder, archive)
    ('cifar10', 'python'): ('cifar-10-batches-py', 'cifar-10-python.tar.gz'),
    ('cifar10', 'binary'): ('cifar-10-batches-bin', 'cifar-10-binary.tar.gz'),
    ('cifar100', 'python'): ('cifar-100-python', 'cifar-100-python.tar.gz'),
    ('cifar100', 'binary'): ('cifar-100-binary', 'cifar-100-binary.tar.gz'),
}
RGB_MEAN = np.array([123.68, 116.779, 103.939]).reshape(3, 1, 1)
RGB_STD = np.array([58.393, 57.12, 57.375]).reshape(3, 1, 1)


# --------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Gluon's CIFAR classes are the only code that may download: fail loudly if reached."""
    def refuse(*args, **kwargs):
        raise AssertionError('a download through gluon was attempted')
    for module in (vision, vision.datasets):
        monkeypatch.setattr(module, 'CIFAR10', refuse)
        monkeypatch.setattr(module, 'CIFAR100', refuse)


def tiny_split(count, seed, classes=10):
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(count, 32, 32, 3)).astype(np.uint8)
    return images, rng.randint(0, classes, count), rng.randint(0, 20, count)


@pytest.fixture
def splits():
    """(train, test) of (images, fine labels, coarse labels): 10 and 5 random images."""
    return tiny_split(10, 1, classes=100), tiny_split(5, 2, classes=100)


def write_both(root, name, fmt, splits, archive=False):
    (images, fine, coarse), (test_images, test_fine, test_coarse) = splits
    if name == 'cifar10':
        fine, test_fine, coarse, test_coarse = fine % 10, test_fine % 10, None, None
    return write_cifar(root, name, fmt, images, fine, coarse, archive, test_images=test_images,
                       test_labels=test_fine, test_coarse=test_coarse)


def expected(splits, name, train, labels='fine'):
    images, fine, coarse = splits[0 if train else 1]
    targets = {'fine': fine % 10 if name == 'cifar10' else fine, 'coarse': coarse}[labels]
    return images, targets


@pytest.mark.parametrize('name,fmt,archive', FORMATS)
def test_load_cifar_reads_back_every_official_format(tmp_path, splits, name, fmt, archive):
    written = write_both(tmp_path, name, fmt, splits, archive)
    assert written == tmp_path / RELEASES[name, fmt][archive]
    label_sets = ('fine', 'coarse') if name == 'cifar100' else ('fine',)
    for train in (True, False):
        for labels in label_sets:
            images, targets = load_cifar(name, tmp_path, train=train, labels=labels)
            want_images, want_targets = expected(splits, name, train, labels)
            assert images.dtype == np.uint8 and images.shape == want_images.shape
            assert targets.dtype == np.int32
            np.testing.assert_array_equal(images, want_images)
            np.testing.assert_array_equal(targets, want_targets)


@pytest.mark.parametrize('name,fmt', list(RELEASES))
def test_root_may_be_the_release_folder_or_archive_itself(tmp_path, splits, name, fmt):
    folder = write_both(tmp_path / 'unpacked', name, fmt, splits)
    archive = write_both(tmp_path / 'packed', name, fmt, splits, archive=True)
    want_images, want_targets = expected(splits, name, train=False)
    for root in (folder, archive, str(folder)):
        images, targets = load_cifar(name, root, train=False)
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(targets, want_targets)


def test_written_files_follow_the_official_layout(tmp_path, splits):
    folder = write_both(tmp_path, 'cifar10', 'python', splits)
    assert sorted(path.name for path in folder.iterdir()) == [
        'data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5',
        'test_batch']
    batch = pickle.loads((folder / 'data_batch_1').read_bytes(), encoding='bytes')
    assert batch[b'data'].shape == (2, 3072) and batch[b'data'].dtype == np.uint8
    assert len(batch[b'labels']) == 2
    binary = write_both(tmp_path, 'cifar100', 'binary', splits)
    assert (binary / 'train.bin').stat().st_size == 10 * (2 + 3072)
    assert (binary / 'test.bin').stat().st_size == 5 * (2 + 3072)


def plane_image():
    """One image as the releases store it: 1024 R, then 1024 G, then 1024 B bytes, row-major."""
    red = (np.arange(1024) % 251).astype(np.uint8)
    green = np.full(1024, 100, np.uint8)
    blue = (np.arange(1024) // 32).astype(np.uint8)
    return np.concatenate([red, green, blue])


def check_plane_image(image):
    assert image.shape == (32, 32, 3)
    assert tuple(image[0, 0]) == (0, 100, 0)
    assert tuple(image[0, 5]) == (5, 100, 0)  # row 0, column 5
    assert tuple(image[2, 1]) == (65, 100, 2)  # row 2, column 1


def test_binary_records_are_decoded_as_documented(tmp_path):
    folder = tmp_path / 'cifar-100-binary'
    folder.mkdir()
    record = np.concatenate([[13, 77], plane_image()]).astype(np.uint8).tobytes()
    (folder / 'test.bin').write_bytes(record)
    images, fine = load_cifar('cifar100', tmp_path, train=False)
    _, coarse = load_cifar('cifar100', tmp_path, train=False, labels='coarse')
    check_plane_image(images[0])
    assert (fine[0], coarse[0]) == (77, 13)


def test_python_batches_are_decoded_as_documented(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    batch = {b'batch_label': b'testing batch 1 of 1', b'labels': [4],
             b'data': plane_image().reshape(1, 3072), b'filenames': [b'x.png']}
    (folder / 'test_batch').write_bytes(pickle.dumps(batch, protocol=2))
    images, labels = load_cifar('cifar10', tmp_path, train=False)
    check_plane_image(images[0])
    assert labels.tolist() == [4]


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_missing_dataset_raises_one_line_message(tmp_path, name):
    for root in (tmp_path, tmp_path / 'nowhere'):
        with pytest.raises(DatasetNotFoundError) as info:
            load_cifar(name, root)
        message = str(info.value)
        assert '\n' not in message and str(root) in message
        for fmt in ('python', 'binary'):
            assert all(part in message for part in RELEASES[name, fmt])
        assert 'cs.toronto.edu' in message and '--data-dir' in message
    assert isinstance(info.value, FileNotFoundError)
    assert 'no such directory' in message


def test_incomplete_release_names_the_missing_file(tmp_path, splits):
    folder = write_both(tmp_path, 'cifar10', 'python', splits)
    (folder / 'test_batch').unlink()
    assert len(load_cifar('cifar10', tmp_path, train=True)[0]) == 10
    with pytest.raises(DatasetNotFoundError, match='lacks test_batch'):
        load_cifar('cifar10', tmp_path, train=False)


def test_archive_without_the_batches_is_not_found(tmp_path):
    import tarfile
    with tarfile.open(tmp_path / 'cifar-10-python.tar.gz', 'w:gz') as tar:
        tar.add(__file__, arcname='cifar-10-batches-py/readme.html')
    with pytest.raises(DatasetNotFoundError, match='lacks cifar-10-batches-py/test_batch'):
        load_cifar('cifar10', tmp_path, train=False)
    (tmp_path / 'cifar-10-python.tar.gz').write_bytes(b'not a gzip file')
    with pytest.raises(DatasetNotFoundError, match='not a readable'):
        load_cifar('cifar10', tmp_path, train=False)


def test_bad_names_and_coarse_cifar10_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match='CIFAR-100'):
        load_cifar('cifar10', tmp_path, labels='coarse')
    with pytest.raises(ValueError):
        load_cifar('cifar1000', tmp_path)
    with pytest.raises(ValueError):
        load_cifar('cifar100', tmp_path, labels='medium')
    with pytest.raises(ValueError):
        write_cifar(tmp_path, 'cifar10', 'python', *tiny_split(2, 0)[:2], coarse=[0, 1])


def test_default_root_goes_through_gluon(monkeypatch):
    calls = []

    class FakeCIFAR100:
        def __init__(self, **kwargs):
            calls.append(kwargs)
            self._data = mx.nd.zeros((3, 32, 32, 3), dtype='uint8')
            self._label = np.array([1, 2, 3], dtype=np.int32)

    monkeypatch.setattr(vision, 'CIFAR100', FakeCIFAR100)
    images, labels = load_cifar('cifar100', train=False, labels='coarse')
    assert calls == [{'train': False, 'fine_label': False}]
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [1, 2, 3]


def test_failed_default_download_becomes_not_found(monkeypatch):
    def offline(**kwargs):
        raise OSError('Failed to establish a new connection:\n[Errno 101] unreachable')
    monkeypatch.setattr(vision, 'CIFAR10', offline)
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar('cifar10')
    message = str(info.value)
    assert '\n' not in message and 'CIFAR-10' in message and '--data-dir' in message
    assert 'unreachable' in message


@pytest.mark.parametrize('labels,classes', [('fine', 100), ('coarse', 20)])
def test_cifar_dataset_items_and_transforms(tmp_path, splits, labels, classes):
    write_both(tmp_path, 'cifar100', 'binary', splits)
    dataset = CIFAR('cifar100', tmp_path, train=True, labels=labels)
    want_images, want_targets = expected(splits, 'cifar100', True, labels)
    assert len(dataset) == 10 and dataset.classes == dataset.num_classes == classes
    image, label = dataset[3]
    assert isinstance(image, mx.nd.NDArray) and image.dtype == np.uint8
    assert image.shape == (32, 32, 3) and isinstance(label, int)
    np.testing.assert_array_equal(image.asnumpy(), want_images[3])
    assert label == want_targets[3]
    tensor, label = dataset.transform_first(cifar_transforms(train=False))[3]
    mean, std = np.array(cifar.CIFAR_MEAN), np.array(cifar.CIFAR_STD)
    want = (want_images[3] / 255.0 - mean) / std
    np.testing.assert_allclose(tensor.asnumpy(), want.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    tensor, _ = dataset.transform_first(cifar_transforms(train=True))[3]
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32


def test_train_transforms_crop_from_a_zero_padded_image():
    image = mx.nd.full((32, 32, 3), 255, dtype='uint8')
    outs = [cifar_transforms(train=True, mean=(0, 0, 0), std=(1, 1, 1))(image).asnumpy()
            for _ in range(20)]
    assert all(out.shape == (3, 32, 32) for out in outs)
    assert all(set(np.unique(out)) <= {0.0, 1.0} for out in outs)
    assert any(out.min() == 0.0 for out in outs)  # some crops reach into the padding


@pytest.fixture
def fake_autoaugment(monkeypatch):
    """A stand-in openaff.data.autoaugment recording the policies it is built with."""
    policies = []

    class AutoAugment(mx.gluon.Block):
        def __init__(self, policy='cifar10', seed=None):
            super().__init__()
            policies.append(policy)

        def forward(self, x):
            return x

    module = types.ModuleType('openaff.data.autoaugment')
    module.AutoAugment = AutoAugment
    monkeypatch.setitem(sys.modules, 'openaff.data.autoaugment', module)
    return policies, AutoAugment


def child_types(compose):
    return [type(child).__name__ for child in compose._children.values()]


def test_auto_augment_is_first_and_only_when_asked(fake_autoaugment):
    policies, fake = fake_autoaugment
    for build, policy in ((cifar_transforms, 'cifar10'), (digits_transforms, 'cifar10'),
                          (lambda train, auto_aug: imagenet_transforms(train, auto_aug=auto_aug),
                           'imagenet')):
        assert fake.__name__ not in child_types(build(True, auto_aug=False))
        assert child_types(build(True, auto_aug=True))[0] == fake.__name__
        assert policies[-1] == policy
        assert fake.__name__ not in child_types(build(False, auto_aug=True))
    assert len(policies) == 3


def test_real_auto_augment_composes():
    image = mx.nd.array(np.random.randint(0, 256, (32, 32, 3)), dtype='uint8')
    assert cifar_transforms(True, auto_aug=True)(image).shape == (3, 32, 32)
    assert digits_transforms(True, auto_aug=True)(image).shape == (3, 32, 32)


# --------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------

def test_digits_split_shapes_and_stratification():
    images, labels = load_digits_split(train=True)
    test_images, test_labels = load_digits_split(train=False)
    assert images.shape == (1347, 32, 32, 3) and test_images.shape == (450, 32, 32, 3)
    assert images.dtype == test_images.dtype == np.uint8
    assert labels.dtype == test_labels.dtype == np.int32
    assert set(test_labels.tolist()) == set(range(10))
    test_share = np.bincount(test_labels, minlength=10) / np.bincount(
        np.concatenate([labels, test_labels]), minlength=10)
    np.testing.assert_allclose(test_share, 450 / 1797, atol=0.01)
    assert images.max() == 255 and images.min() == 0
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_digits_split_is_disjoint_and_made_from_sklearn():
    from sklearn.datasets import load_digits
    train_rows, test_rows = digits._split_rows()
    assert not set(train_rows) & set(test_rows)
    assert len(set(train_rows) | set(test_rows)) == 1797
    source = load_digits()
    row = train_rows[0]
    scaled = np.round(source.images[row] * 255 / 16).astype(np.uint8)
    resized = np.asarray(Image.fromarray(scaled).resize((32, 32), Image.BILINEAR))
    images, labels = load_digits_split(train=True)
    np.testing.assert_array_equal(images[0, :, :, 1], resized)
    assert labels[0] == source.target[row]


def test_digits_are_deterministic_across_calls():
    first = load_digits_split(train=False)
    digits._split_rows.cache_clear()
    digits._resized_digits.cache_clear()
    second = load_digits_split(train=False)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_digits_mean_std_constants_match_training_split():
    images = load_digits_split(train=True)[0] / 255.0
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), DIGITS_MEAN, atol=1e-3)
    np.testing.assert_allclose(images.std(axis=(0, 1, 2)), DIGITS_STD, atol=1e-3)


def test_digits_dataset_and_transforms():
    dataset = Digits(train=False)
    assert len(dataset) == 450 and dataset.classes == dataset.num_classes == 10
    image, label = dataset[0]
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3) and isinstance(label, int)
    assert 'RandomFlipLeftRight' not in child_types(digits_transforms(train=True))
    assert 'RandomCrop' in child_types(digits_transforms(train=True))
    tensor, _ = dataset.transform_first(digits_transforms(train=True))[0]
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32
    tensor, _ = dataset.transform_first(digits_transforms(train=False))[0]
    want = (image.asnumpy() / 255.0 - np.array(DIGITS_MEAN)) / np.array(DIGITS_STD)
    np.testing.assert_allclose(tensor.asnumpy(), want.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------

COLORS = np.array([[200, 40, 10], [10, 200, 40], [40, 10, 200]], dtype=np.uint8)


@pytest.fixture
def tiny_rec(tmp_path):
    """14 constant-colour 40x40 images, class k coloured COLORS[k]."""
    labels = [index % 3 for index in range(14)]
    images = [np.broadcast_to(COLORS[label], (40, 40, 3)).copy() for label in labels]
    rec, idx = make_rec(tmp_path / 'tiny', images, labels)
    return rec, idx, labels


def test_make_rec_stores_rgb(tiny_rec):
    rec, _, labels = tiny_rec
    dataset = vision.ImageRecordDataset(rec)
    assert len(dataset) == 14
    for index in (0, 1, 2):
        image, label = dataset[index]
        assert label == labels[index]
        np.testing.assert_allclose(image.asnumpy()[20, 20], COLORS[labels[index]], atol=3)


def unnormalize(batch):
    return batch.asnumpy() * RGB_STD + RGB_MEAN


def test_rec_loaders_one_epoch(tiny_rec):
    rec, idx, labels = tiny_rec
    train, val = rec_loaders(rec, idx, rec, idx, batch_size=4, input_size=32, num_workers=1)
    assert (len(train), len(val)) == (3, 4)  # train drops the last 2 samples, val keeps them
    for _ in range(2):
        batches = [(data.shape, data.dtype, label.asnumpy()) for data, label in train]
        assert len(batches) == 3
        for shape, dtype, label in batches:
            assert shape == (4, 3, 32, 32) and dtype == np.float32
            assert set(label.tolist()) <= {0, 1, 2}
    for _ in range(2):
        seen = []
        for data, label in val:
            centre = unnormalize(data)[:, :, 16, 16]
            label = label.asnumpy().astype(int)
            np.testing.assert_allclose(centre, COLORS[label], atol=4)
            seen += label.tolist()
        assert seen == labels


def test_rec_loaders_shards_are_disjoint(tmp_path):
    labels = list(range(11))
    images = [np.zeros((36, 36, 3), np.uint8)] * 11
    rec, idx = make_rec(tmp_path / 'index', images, labels)
    seen = []
    for part in range(3):
        train, val = rec_loaders(rec, idx, rec, idx, batch_size=2, input_size=32, num_workers=1,
                                 num_parts=3, part_index=part)
        part_labels = [int(x) for _, label in val for x in label.asnumpy()]
        assert len(val) == -(-len(part_labels) // 2)
        assert len(train) == len(part_labels) // 2
        train_labels = [int(x) for _, label in train for x in label.asnumpy()]
        assert set(train_labels) <= set(part_labels)
        seen += part_labels
    assert sorted(seen) == labels


def test_rec_loaders_follow_the_original_recipe(tiny_rec, monkeypatch):
    rec, idx, _ = tiny_rec
    configs = []
    monkeypatch.setattr(mx.io, 'ImageRecordIter', lambda **kwargs: configs.append(kwargs))
    rec_loaders(rec, idx, rec, idx, batch_size=4, input_size=32, crop_ratio=0.875,
                num_workers=3, num_parts=2, part_index=1, seed=5)
    train, val = configs
    for config in configs:
        assert config['data_shape'] == (3, 32, 32) and config['preprocess_threads'] == 3
        assert (config['num_parts'], config['part_index']) == (2, 1)
        assert (config['mean_r'], config['mean_g'], config['mean_b']) == (123.68, 116.779, 103.939)
        assert (config['std_r'], config['std_g'], config['std_b']) == (58.393, 57.12, 57.375)
    assert train['shuffle'] and train['rand_mirror'] and train['random_resized_crop']
    assert (train['min_random_area'], train['max_random_area']) == (0.08, 1)
    assert (train['min_aspect_ratio'], train['max_aspect_ratio']) == (3 / 4, 4 / 3)
    assert train['brightness'] == train['contrast'] == train['saturation'] == 0.4
    assert train['pca_noise'] == 0.1 and 'resize' not in train
    assert not val['shuffle'] and val['resize'] == 37  # ceil(32 / 0.875)
    assert not any(val.get(key) for key in ('rand_mirror', 'random_resized_crop', 'rand_crop'))


def test_rec_loaders_missing_files(tiny_rec, tmp_path):
    rec, idx, _ = tiny_rec
    missing = tmp_path / 'val.rec'
    with pytest.raises(DatasetNotFoundError) as info:
        rec_loaders(rec, idx, missing, tmp_path / 'val.idx', batch_size=2)
    message = str(info.value)
    assert '\n' not in message and str(missing) in message and str(rec) not in message


@pytest.fixture
def tiny_folder(tmp_path):
    """root/{train,val}/<class>/*.jpg, constant colours; val image i of class k has a
    brightness offset so each val image is identifiable from its pixels."""
    for split, count in (('train', 4), ('val', 3)):
        for label, name in enumerate(('apple', 'bear', 'cat')):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                colour = COLORS[label].astype(int) + 10 * index
                pixels = np.broadcast_to(colour.astype(np.uint8), (40, 48, 3))
                Image.fromarray(np.ascontiguousarray(pixels)).save(
                    folder / f'{index}.jpg', quality=95)
    return tmp_path


def val_samples(loader):
    samples = []
    for data, label in loader:
        centre = data.asnumpy()[:, :, 16, 16] * np.array([0.229, 0.224, 0.225]) + np.array(
            [0.485, 0.456, 0.406])
        for pixel, target in zip(centre * 255, label.asnumpy().astype(int)):
            offset = int(round((pixel - COLORS[target]).mean() / 10))
            np.testing.assert_allclose(pixel, COLORS[target] + 10 * offset, atol=4)
            samples.append((target, offset))
    return samples


def test_folder_loaders(tiny_folder):
    train, val = folder_loaders(tiny_folder, batch_size=4, input_size=32, num_workers=0)
    assert (len(train), len(val)) == (3, 3)
    for data, label in train:
        assert data.shape == (4, 3, 32, 32) and data.dtype == np.float32
        assert set(label.asnumpy().astype(int).tolist()) <= {0, 1, 2}
    assert sorted(val_samples(val)) == [(k, i) for k in range(3) for i in range(3)]


def test_folder_loader_parts_are_disjoint(tiny_folder):
    parts = [folder_loaders(tiny_folder, batch_size=2, input_size=32, num_workers=0,
                            num_parts=2, part_index=part) for part in range(2)]
    seen = [val_samples(val) for _, val in parts]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [(k, i) for k in range(3) for i in range(3)]
    assert [len(train) for train, _ in parts] == [3, 3]


def test_shard_sampler():
    parts = [list(ShardSampler(10, 3, part)) for part in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    even = [list(ShardSampler(10, 3, part, even=True)) for part in range(3)]
    assert [len(part) for part in even] == [3, 3, 3]
    assert not set(even[0]) & set(even[1]) | set(even[2]) & set(even[0])
    # shuffled parts: one global permutation per epoch, split between the parts
    def drawn(part, seed=3):  # each worker draws from the same seeded state
        np.random.seed(seed)
        return list(ShardSampler(100, 2, part, shuffle=True))
    epoch0 = [drawn(0), drawn(1)]
    assert sorted(epoch0[0] + epoch0[1]) == list(range(100))
    np.random.seed(3)
    expected = np.random.RandomState(3).permutation(100).tolist()
    assert list(ShardSampler(100, 1, 0, shuffle=True)) == expected
    assert [i % 2 for i in epoch0[1]] != [1] * 50  # not a fixed strided subset
    assert sorted(drawn(1, seed=4)) != sorted(epoch0[1])  # a new split every epoch
    with pytest.raises(ValueError):
        ShardSampler(10, 2, 2)


def test_folder_loaders_missing(tmp_path):
    (tmp_path / 'train').mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        folder_loaders(tmp_path, batch_size=2)
    assert str(tmp_path / 'val') in str(info.value) and '\n' not in str(info.value)


def test_synthetic_loaders_are_fixed_and_reiterable():
    train, val = synthetic_loaders(batch_size=3, input_size=16, num_classes=5, train_batches=4,
                                   val_batches=2, seed=7)
    assert (len(train), len(val)) == (4, 2)
    first = [(data.asnumpy(), label.asnumpy()) for data, label in train]
    second = [(data.asnumpy(), label.asnumpy()) for data, label in train]
    again = [data.asnumpy() for data, _ in synthetic_loaders(
        batch_size=3, input_size=16, num_classes=5, train_batches=4, seed=7)[0]]
    other = [data.asnumpy() for data, _ in synthetic_loaders(
        batch_size=3, input_size=16, num_classes=5, train_batches=4, seed=8)[0]]
    for (data, label), (data2, label2), data3, data4 in zip(first, second, again, other):
        assert data.shape == (3, 3, 16, 16) and data.dtype == np.float32
        assert set(label.astype(int).tolist()) <= set(range(5))
        np.testing.assert_array_equal(data, data2)
        np.testing.assert_array_equal(label, label2)
        np.testing.assert_array_equal(data, data3)
        assert not np.array_equal(data, data4)
    assert not np.array_equal(first[0][0], first[1][0])
