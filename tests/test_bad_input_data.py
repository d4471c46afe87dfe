"""Data that would train or score silently wrong, or fail only after an epoch: CIFAR batches
whose labels do not match their images, empty splits, ImageNet validation classes numbered
apart from training's, unreadable folders and corrupt images. The data layer refuses them
while the loaders are built (or, for an image, names the file when it is decoded); the
commands say so in one line (each case in its own process: exit status, one ``error:`` line,
no traceback, no work started)."""
import os
import pickle

import numpy as np
import pytest
from cifar_files import write_cifar
from conftest import (
    assert_one_line_error,
    run_command,
    run_dir_args,
    save_as_training_run,
    tiny_images,
    write_tiny_cifar,
)
from PIL import Image

from openaff.data.cifar import load_cifar
from openaff.data.imagenet import folder_loaders

COLORS = np.array([[200, 40, 10], [10, 200, 40], [40, 10, 200]], dtype=np.uint8)


# ---------------------------------------------------------------- CIFAR
def cifar10_python(root, n_train=40, n_test=20):
    images, labels = tiny_images(n_train, 10, 0)
    test_images, test_labels = tiny_images(n_test, 10, 1)
    return write_cifar(root, 'cifar10', 'python', images, labels, test_images=test_images,
                       test_labels=test_labels)


def rewrite_pickle(path, change):
    with open(path, 'rb') as handle:
        batch = pickle.load(handle, encoding='bytes')
    change(batch)
    with open(path, 'wb') as handle:
        pickle.dump(batch, handle, protocol=2)


def test_cifar_pickle_with_fewer_labels_than_images_names_the_file(tmp_path):
    folder = cifar10_python(tmp_path)
    rewrite_pickle(folder / 'data_batch_3', lambda b: b.__setitem__(b'labels', b[b'labels'][:-3]))
    with pytest.raises(ValueError) as info:
        load_cifar('cifar10', tmp_path, train=True)
    message = str(info.value)
    assert 'data_batch_3' in message and '8 images but 5 labels' in message, message


def test_cifar_pickle_with_a_partial_image_names_the_file(tmp_path):
    folder = cifar10_python(tmp_path)
    rewrite_pickle(folder / 'test_batch', lambda b: b.__setitem__(b'data', b[b'data'][:, :-1]))
    with pytest.raises(ValueError, match='test_batch.*3072'):
        load_cifar('cifar10', tmp_path, train=False)


@pytest.mark.parametrize('fmt, test_file', [('binary', 'test_batch.bin'),
                                            ('python', 'test_batch')])
def test_an_empty_test_split_is_refused_when_loaded(tmp_path, fmt, test_file):
    folder = write_tiny_cifar(tmp_path, 'cifar10', fmt, n_train=20, n_test=4)
    release = next(folder.iterdir())
    if fmt == 'binary':
        (release / test_file).write_bytes(b'')
    else:
        rewrite_pickle(release / test_file, lambda b: b.update(
            {b'data': np.zeros((0, 3072), np.uint8), b'labels': []}))
    assert len(load_cifar('cifar10', tmp_path, train=True)[0]) == 20
    with pytest.raises(ValueError, match=f'{test_file}.*no image'):
        load_cifar('cifar10', tmp_path, train=False)


# ---------------------------------------------------------------- ImageNet folders
def image_folders(root, train=('apple', 'bear', 'cat'), val=('apple', 'bear', 'cat'),
                  per_class=2):
    """root/{train,val}/<class>/<k>.jpg, class k of the training list coloured COLORS[k]."""
    for split, classes in (('train', train), ('val', val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in classes:
            folder = root / split / name
            folder.mkdir()
            colour = COLORS[train.index(name) % 3] if name in train else np.uint8([128] * 3)
            for index in range(per_class):
                pixels = np.broadcast_to(colour, (40, 48, 3))
                Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f'{index}.jpg',
                                                                   quality=95)
    return root


def centre_colours(loader):
    """(label, centre colour's class) of every validation sample."""
    found = []
    for data, label in loader:
        centre = data.asnumpy()[:, :, 16, 16] * np.array([0.229, 0.224, 0.225]) + \
            np.array([0.485, 0.456, 0.406])
        for pixel, target in zip(centre * 255, label.asnumpy().astype(int)):
            found.append((int(target), int(np.abs(COLORS - pixel).sum(axis=1).argmin())))
    return found


def test_validation_classes_are_numbered_by_training_classes(tmp_path):
    """val/ lacks 'apple': its 'bear' and 'cat' keep training's labels 1 and 2 (numbered on
    their own they would be 0 and 1, scored against the wrong classes)."""
    root = image_folders(tmp_path, val=('bear', 'cat'))
    _, val = folder_loaders(root, batch_size=3, input_size=32, num_workers=0)
    assert sorted(centre_colours(val)) == [(1, 1), (1, 1), (2, 2), (2, 2)]
    from openaff.data.imagenet import folder_val_loader  # evaluation's, without training
    assert sorted(centre_colours(folder_val_loader(root, 3, 32, num_workers=0))) == \
        [(1, 1), (1, 1), (2, 2), (2, 2)]


def test_a_validation_class_unknown_to_training_is_refused(tmp_path):
    root = image_folders(tmp_path, val=('apple', 'bear', 'cow'))
    with pytest.raises(ValueError) as info:
        folder_loaders(root, batch_size=2, input_size=32, num_workers=0)
    assert 'cow' in str(info.value) and str(root / 'val') in str(info.value)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_an_empty_split_is_refused_before_training(tmp_path, split):
    root = image_folders(tmp_path)
    for path in (root / split).glob('*/*.jpg'):
        path.unlink()
    with pytest.raises(ValueError, match=f'{root / split}.*no image'):
        folder_loaders(root, batch_size=2, input_size=32, num_workers=0)


def test_an_unreadable_class_folder_is_named(tmp_path, monkeypatch):
    root = image_folders(tmp_path)
    locked = str(root / 'train' / 'bear')
    listdir = os.listdir

    def refuse(path):  # chmod 000 does not stop root, who runs CI containers
        if os.fspath(path) == locked:
            raise PermissionError(13, 'Permission denied', locked)
        return listdir(path)
    monkeypatch.setattr(os, 'listdir', refuse)
    with pytest.raises(ValueError) as info:
        folder_loaders(root, batch_size=2, input_size=32, num_workers=0)
    assert locked in str(info.value) and 'Permission denied' in str(info.value)


def test_a_corrupt_image_names_the_file(tmp_path):
    root = image_folders(tmp_path)
    bad = root / 'val' / 'cat' / '1.jpg'
    bad.write_bytes(b'\xff\xd8 this is not really a JPEG')
    _, val = folder_loaders(root, batch_size=2, input_size=32, num_workers=0)
    with pytest.raises(OSError) as info:  # UnreadableImageError: an OSError and a ValueError
        list(val)
    assert str(bad) in str(info.value) and '\n' not in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- the commands, one process each
def written(folder):
    """The files a run wrote (a run's hidden lock file is not its work)."""
    return [p.name for p in folder.glob('*') if not p.name.startswith('.')] \
        if folder.exists() else []


def cifar_train(data, out, *extra):
    return ['--dataset', 'cifar10', '--data-dir', data, '--num-epochs', '1', '--blocks', '1',
            '--channel-times', '1', '-j', '0', '--seed', '0', '--batch-size', '8',
            *run_dir_args(out), *extra]


def imagenet_train(root, out, *extra):
    return ['--data-dir', root, '--num-epochs', '1', '--batch-size', '2', '--input-size', '32',
            '--num-gpus', '0', '-j', '0', '--save-dir', out, '--logging-file',
            out / 'train.log', '--save-plot-dir', out, *extra]


@pytest.mark.multiprocess
def test_train_cifar_refuses_misaligned_labels(tmp_path):
    folder = cifar10_python(tmp_path / 'data')
    rewrite_pickle(folder / 'data_batch_2', lambda b: b.__setitem__(b'labels', b[b'labels'][:-1]))
    out = tmp_path / 'out'
    assert_one_line_error(run_command('train_cifar.py', *cifar_train(tmp_path / 'data', out)),
                          'data_batch_2')
    assert not written(out), 'work started before the error'


@pytest.mark.multiprocess
def test_train_cifar_refuses_an_empty_test_batch_before_training(tmp_path):
    folder = write_tiny_cifar(tmp_path / 'data', 'cifar10', 'binary', n_train=16, n_test=4)
    (next(folder.iterdir()) / 'test_batch.bin').write_bytes(b'')
    out = tmp_path / 'out'
    assert_one_line_error(run_command('train_cifar.py', *cifar_train(tmp_path / 'data', out)),
                          'test_batch.bin')
    assert not written(out), 'work started before the error'


@pytest.mark.multiprocess
@pytest.mark.parametrize('case', ['empty val', 'val class unknown to train',
                                  'no training image'])
def test_train_imagenet_refuses_bad_folders_before_training(tmp_path, case):
    root = image_folders(tmp_path / 'data', val=('apple', 'bear', 'cow') if
                         case == 'val class unknown to train' else ('apple', 'bear', 'cat'))
    split = {'empty val': 'val', 'no training image': 'train'}.get(case)
    if split:
        for path in (root / split).glob('*/*.jpg'):
            path.unlink()
    out = tmp_path / 'out'
    done = run_command('train_imagenet.py', *imagenet_train(root, out))
    assert_one_line_error(done, 'cow' if split is None else str(root / split))
    assert not (out / 'train.log').exists(), 'work started before the error'


@pytest.mark.multiprocess
def test_train_imagenet_names_a_corrupt_training_image(tmp_path):
    root = image_folders(tmp_path / 'data')
    bad = root / 'train' / 'bear' / '0.jpg'
    bad.write_bytes(b'\xff\xd8 not a JPEG')
    out = tmp_path / 'out'
    done = run_command('train_imagenet.py', *imagenet_train(root, out))
    # found when the image is first decoded, inside the epoch: the run's I/O error status
    assert_one_line_error(done, str(bad), status=1)
    assert not list(out.glob('*.params')), 'a checkpoint was written'


@pytest.mark.multiprocess
def test_evaluate_names_a_corrupt_validation_image(tmp_path):
    root = image_folders(tmp_path / 'data')
    bad = root / 'val' / 'apple' / '1.jpg'
    bad.write_bytes(b'')
    # a zoo name would download its release: a training run's checkpoint instead
    params = _tiny_imagenet_checkpoint(tmp_path)
    done = run_command('openaff.cli.evaluate', params, '--dataset', 'imagenet', '--data-dir', root,
                       '--batch-size', '2')
    assert_one_line_error(done, str(bad))


def _tiny_imagenet_checkpoint(tmp_path):
    """A tiny 3-class network saved as a training run on 32x32 "imagenet" crops."""

    import mxnet as mx

    from openaff import get_model
    net = get_model('cifar_aff_resnet20', classes=3, layers=[1, 1, 1], channels=[8, 8, 16, 32])
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    return save_as_training_run(net, tmp_path)
