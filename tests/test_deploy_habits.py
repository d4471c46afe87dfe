"""The habits of GluonCV and MXNet that users bring: GluonCV's model zoo knows openaff's names,
``get_model`` takes ``ctx`` as GluonCV's does, the cache follows ``$MXNET_HOME``, the README's
submodules are attributes of the package, wrong types are one clear error; and ImageNet
evaluation needs only validation files, Grad-CAM sees what evaluation sees, and the commands
write the file they print, checked before they work."""
import dataclasses
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from conftest import COMMAND_ENV, REPO, save_as_training_run
from PIL import Image
from sklearn.datasets import load_sample_images

import openaff
from openaff import get_model, zoo
from openaff.apps.cam import grad_cam, preprocess
from openaff.store import git_blob_sha1, load_checkpoint

PHOTOS = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640 RGB
TINY = dict(layers=[1, 1, 1], channels=[8, 8, 16, 32])
ENV = COMMAND_ENV


def python(code, **env):
    """Run ``code`` in a fresh interpreter (import order matters to some of these habits)."""
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=dict(ENV, **env), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def tiny_release(tmp_path, monkeypatch):
    """``cifar_aff_resnet32``'s release replaced by a tiny net's weights served from a
    ``file://`` base URL; returns (input, expected output)."""
    served = tmp_path / 'srv'
    (served / 'params').mkdir(parents=True)
    net = get_model('cifar_aff_resnet32', **TINY)
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 3, 32, 32)))
    expected = net(x).asnumpy()
    net.save_parameters(str(served / 'params' / 'tiny.params'))
    info = zoo.model_info('cifar_aff_resnet32')
    monkeypatch.setitem(zoo.MODELS, info.name, dataclasses.replace(
        info, args={**info.args, **TINY}, release=dataclasses.replace(
            info.release, path='params/tiny.params',
            blob_sha1=git_blob_sha1(str(served / 'params' / 'tiny.params')))))
    monkeypatch.setenv('OPENAFF_BASE_URL', served.as_uri() + '/')
    return x, expected


# ---------------------------------------------------------------- GluonCV's model zoo
@pytest.mark.multiprocess
def test_gluoncv_zoo_knows_the_names_whichever_is_imported_first():
    code = ('import {first}; import {second}\n'
            'from gluoncv.model_zoo import get_model, get_model_list\n'
            'names = set(get_model_list())\n'
            'assert {{"aff_resnet50", "cifar_aff_resnet32.coarse", "iaff_resnext50_32x4d"}} <= '
            'names, sorted(n for n in names if "aff" in n)\n'
            'net = get_model("aff_resnet50", classes=10)\n'
            'print(type(net).__name__, net.model_info.name)\n')
    for first, second in (('openaff', 'gluoncv.model_zoo'), ('gluoncv.model_zoo', 'openaff')):
        assert python(code.format(first=first, second=second)).split() == [
            'AFFResNet', 'aff_resnet50.imagenet']


@pytest.mark.multiprocess
def test_import_openaff_does_not_import_gluoncv():
    assert python('import sys, openaff; print("gluoncv" in sys.modules)').strip() == 'False'


def test_gluoncv_get_model_honours_pretrained_ctx_and_root(tiny_release, tmp_path):
    from gluoncv.model_zoo import get_model as gluoncv_model
    x, expected = tiny_release
    assert 'cifar_aff_resnet32' in openaff.register_gluoncv()
    cache = tmp_path / 'cache'
    net = gluoncv_model('cifar_aff_resnet32', pretrained=True, ctx=mx.cpu(0), root=str(cache))
    np.testing.assert_array_equal(net(x).asnumpy(), expected)
    assert (cache / 'tiny.params').is_file()
    assert {p.list_ctx()[0] for p in net.collect_params().values()} == {mx.cpu(0)}


def test_gluoncv_names_are_left_to_gluoncv():
    builders = {'resnet50_v1d': 'gluoncv\'s own', 'aff_resnet50': 'a third party'}
    served = zoo._register_in(builders)
    assert builders['resnet50_v1d'] == 'gluoncv\'s own'
    assert builders['aff_resnet50'] == 'a third party'
    assert 'aff_resnet50' not in served and 'iaff_resnet50' in served
    assert zoo._register_in(builders) == served  # again: the same, ours replaced by ours


def test_model_lists_as_gluoncv_names_them():
    every = openaff.get_model_list()
    assert set(openaff.list_models()) <= set(every)
    assert set(openaff.list_models(pretrained=True)) <= set(every)
    pretrained = openaff.pretrained_model_list()
    assert 'aff_resnet50' in pretrained and 'aff_resnet50.imagenet' in pretrained
    assert 'cifar_iaff_resnet32' not in pretrained  # no released checkpoint
    assert set(pretrained) <= set(every)


def test_ctx_without_pretrained_is_ignored_as_in_gluoncv():
    net = get_model('cifar_aff_resnet32', ctx=mx.cpu(), **TINY)
    assert all(p._data is None for p in net.collect_params().values())  # not initialised
    net.initialize()
    assert net(mx.nd.zeros((1, 3, 32, 32))).shape == (1, 100)


def test_get_model_ctx_places_loaded_weights(tiny_release, tmp_path):
    x, expected = tiny_release
    net = get_model('cifar_aff_resnet32', pretrained=True, ctx=[mx.cpu(1)],
                    root=tmp_path / 'cache')
    assert {p.list_ctx()[0] for p in net.collect_params().values()} == {mx.cpu(1)}
    np.testing.assert_array_equal(net(x.as_in_context(mx.cpu(1))).asnumpy(), expected)


# ---------------------------------------------------------------- $MXNET_HOME
def test_default_cache_is_under_mxnet_home(tiny_release, tmp_path, monkeypatch):
    x, expected = tiny_release
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'mxnet-home'))
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    net = get_model('cifar_aff_resnet32', pretrained=True)
    np.testing.assert_array_equal(net(x).asnumpy(), expected)
    assert (tmp_path / 'mxnet-home' / 'models' / 'tiny.params').is_file()
    assert not (tmp_path / 'home').exists()
    monkeypatch.delenv('MXNET_HOME')
    assert openaff.store.default_root() == str(tmp_path / 'home' / '.mxnet' / 'models')


def test_read_only_cache_hint_names_mxnet_home(tiny_release, tmp_path, monkeypatch):
    from openaff.store import DownloadError
    cache = tmp_path / 'ro'
    cache.mkdir()
    monkeypatch.setattr(os, 'access', lambda path, mode: False)  # root ignores chmod
    with pytest.raises(DownloadError, match='MXNET_HOME') as err:
        get_model('cifar_aff_resnet32', pretrained=True, root=str(cache))
    assert 'OPENAFF_CACHE' not in str(err.value)


# ---------------------------------------------------------------- the README's submodules
@pytest.mark.multiprocess
def test_readme_submodules_are_attributes_without_onnx():
    code = ('import sys\n'
            'sys.modules["onnx"] = None  # any import of onnx would fail\n'
            'import openaff\n'
            'print(openaff.apps.export.export_onnx.__name__, openaff.apps.cam.grad_cam.__name__,\n'
            '      openaff.store.load_checkpoint.__name__, "store" in dir(openaff))\n')
    assert python(code).split() == ['export_onnx', 'grad_cam', 'load_checkpoint', 'True']
    with pytest.raises(AttributeError, match='no_such_module'):
        openaff.no_such_module  # noqa: B018


# ---------------------------------------------------------------- wrong types
@pytest.fixture(scope='module')
def small_net():
    net = get_model('cifar_aff_resnet32', classes=10, **TINY)
    net.initialize(mx.init.Xavier())
    return net


@pytest.mark.parametrize('call, error, fragment', [
    (lambda net: get_model('cifar_aff_resnet32', ctx='cpu'), TypeError, 'mx.Context'),
    (lambda net: get_model('cifar_aff_resnet32', pretrained=True, ctx=['cpu']), TypeError,
     'mx.Context'),
    (lambda net: get_model(None), TypeError, 'str'),
    (lambda net: get_model('cifar_aff_resnet32', pretrained=1.0), TypeError, 'pretrained'),
    (lambda net: load_checkpoint(net, None), TypeError, 'source'),
    (lambda net: load_checkpoint(None, 'x.params'), TypeError, 'Block'),
    (lambda net: load_checkpoint(net, {}, ctx='cpu'), TypeError, 'mx.Context'),
    (lambda net: grad_cam(net, mx.nd.zeros((1, 3, 32, 32)), stage=10),
     ValueError, 'stage 10'),
    (lambda net: grad_cam(net, mx.nd.zeros((1, 3, 32, 32)), stage='last'),
     TypeError, 'stage'),
    (lambda net: grad_cam(net, np.zeros((1, 3, 32, 32))), TypeError, 'NDArray'),
    (lambda net: grad_cam(net, mx.nd.zeros((1, 3, 32, 32)), class_index=1.5),
     TypeError, 'class_index'),
])
def test_wrong_types_are_one_clear_error(small_net, call, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        call(small_net)
    assert '\n' not in str(info.value)


def test_grad_cam_takes_every_stage_it_has(small_net):
    batch = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (1, 3, 32, 32)))
    for stage in (0, 1, 2, -1, -3):
        heat, _ = grad_cam(small_net, batch, stage=stage)
        assert heat.shape == (32, 32)


# ---------------------------------------------------------------- evaluation on .rec files
@pytest.fixture
def tiny_run(tmp_path):
    """A training checkpoint of a tiny 3-class network on "imagenet" 32x32 crops, with its
    record beside it, and a validation .rec of 12 images."""
    from openaff.data.imagenet import make_rec
    net = get_model('cifar_aff_resnet32', classes=3, **TINY)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    run = tmp_path / 'run'
    run.mkdir()
    params = save_as_training_run(net, run)
    rng = np.random.RandomState(0)
    labels = [i % 3 for i in range(12)]
    images = [rng.randint(0, 256, (40, 44, 3)).astype(np.uint8) for _ in labels]
    rec, idx = make_rec(tmp_path / 'val', images, labels)
    return params, rec, idx


def evaluate_main(*argv):
    from openaff.cli.evaluate import main
    return main([str(a) for a in argv])


def test_evaluate_on_rec_needs_only_the_validation_files(tiny_run, tmp_path, monkeypatch,
                                                        capsys):
    """The README's ImageNet command, where no training .rec exists (the default
    ~/.mxnet/datasets/imagenet/rec/train.rec is not there)."""
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    params, rec, idx = tiny_run
    out = tmp_path / 'result.json'
    assert evaluate_main(params, '--dataset', 'imagenet', '--use-rec', '--rec-val', rec,
                         '--rec-val-idx', idx, '--batch-size', '5', '--json', out) == 0, \
        capsys.readouterr().err
    assert 'top-1 acc' in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result['dtype'] == 'float32' and 0 <= result['val_acc'] <= 1
    # precise BN reads training batches: then the training file is needed, said in one line
    assert evaluate_main(params, '--dataset', 'imagenet', '--use-rec', '--rec-val', rec,
                         '--rec-val-idx', idx, '--precise-bn', '2') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'train.rec' in err[0] and str(rec) not in err[0], err
    missing = tmp_path / 'gone.rec'
    assert evaluate_main(params, '--dataset', 'imagenet', '--use-rec', '--rec-val', missing,
                         '--rec-val-idx', idx) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0], err


def test_evaluate_dtype(tiny_run, tmp_path, capsys):
    params, rec, idx = tiny_run
    common = [params, '--dataset', 'imagenet', '--use-rec', '--rec-val', rec, '--rec-val-idx',
              idx, '--rec-train', rec, '--rec-train-idx', idx]
    assert evaluate_main(*common, '--dtype', 'float32') == 0, capsys.readouterr().err
    assert 'top-1 acc' in capsys.readouterr().out
    from openaff.apps.evaluate import report
    assert 'precision:     float16' in report(dict(
        val_acc=0.5, val_top5=None, val_loss=1.0, target='t', dataset='imagenet', labels='fine',
        bn_statistics='stored', reference='', dtype='float16'))
    assert evaluate_main(*common, '--dtype', 'float16') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--dtype float16' in err[0] and 'CPU' in err[0], err


# ------------------------------------------------------------ Grad-CAM sees what evaluation sees
def test_grad_cam_input_is_the_evaluation_input(tmp_path):
    """Both sample photos through the ImageNet validation pipeline (image folders, as
    evaluation reads them) and through cam.preprocess: the same tensor."""
    from openaff.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, folder_loaders
    for split in ('train', 'val'):
        (tmp_path / split / 'photos').mkdir(parents=True)
        for index, photo in enumerate(PHOTOS):
            Image.fromarray(photo).save(tmp_path / split / 'photos' / f'{index}.png')
    _, val = folder_loaders(tmp_path, batch_size=2, input_size=224, num_workers=0)
    (evaluated, _), = list(val)
    for index, photo in enumerate(PHOTOS):
        cam_input = preprocess(photo, IMAGENET_MEAN, IMAGENET_STD, 224)
        assert cam_input.shape == (1, 3, 224, 224)
        np.testing.assert_allclose(cam_input[0].asnumpy(), evaluated[index].asnumpy(),
                                   rtol=0, atol=1e-6)


def test_a_float_image_in_the_unit_range_is_scaled_not_cast_to_black():
    photo = PHOTOS[1]
    reference = preprocess(photo, (0.5,) * 3, (0.25,) * 3, 224).asnumpy()
    as_float = photo.astype(np.float32) / 255
    np.testing.assert_allclose(preprocess(as_float, (0.5,) * 3, (0.25,) * 3, 224).asnumpy(),
                               reference, atol=1e-6)


def test_images_of_other_types_are_scaled_or_refused():
    from openaff.apps.cam import as_rgb8
    photo = PHOTOS[1]
    as_float = photo.astype(np.float32) / 255
    sixteen = photo.astype(np.uint16) * 257
    np.testing.assert_array_equal(as_rgb8(sixteen), photo)
    np.testing.assert_array_equal(as_rgb8(photo.astype(np.float64)), photo)
    np.testing.assert_array_equal(as_rgb8(photo[..., 0]), np.repeat(photo[..., :1], 3, axis=2))
    for bad, fragment in ((as_float - 0.5, 'values run from'), (as_float * np.nan, 'NaN'),
                          (photo[..., :2], 'shape')):
        with pytest.raises(ValueError, match=fragment):
            preprocess(bad, (0.5,) * 3, (0.25,) * 3, 224)


def test_cam_reads_a_16_bit_png_scaled_to_8_bits(tmp_path):
    from openaff.cli.cam import _load_image
    grey = np.linspace(0, 65535, 64 * 96).reshape(64, 96).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / 'grey16.png')
    assert Image.open(tmp_path / 'grey16.png').mode.startswith('I')  # really 16-bit
    photo = _load_image(tmp_path / 'grey16.png')
    assert photo.dtype == np.uint8 and photo.shape == (64, 96, 3)
    np.testing.assert_array_equal(photo[..., 0], np.rint(grey / 257).astype(np.uint8))
    assert 120 < photo.mean() < 135  # a gradient, not black and white (mean 254 when clipped)


# ---------------------------------------------------------------- output files
def cam_main(*argv):
    from openaff.cli.cam import main
    return main([str(a) for a in argv])


@pytest.fixture(scope='module')
def photo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('photo') / 'china.png'
    Image.fromarray(PHOTOS[0][::8, ::8]).save(path)
    return path


def test_cam_writes_and_prints_the_path_it_writes(photo_file, tmp_path, capsys):
    folder = tmp_path / 'figures'
    folder.mkdir()
    assert cam_main('cifar_aff_resnet20', '--image', photo_file, '-o', folder) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(folder / 'cam.png')
    assert (folder / 'cam.png').stat().st_size > 1000
    assert not (tmp_path / 'figures.png').exists()
    bare = tmp_path / 'mine'
    assert cam_main('cifar_aff_resnet20', '--image', photo_file, '-o', bare) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(bare) + '.png'
    assert (tmp_path / 'mine.png').is_file() and not bare.exists()


def test_plotlog_writes_and_prints_the_path_it_writes(tmp_path, capsys):
    from openaff.cli.plotlog import main
    log = tmp_path / 'run.log'
    log.write_text('[Epoch 0] train=0.5 val=0.40\n[Epoch 1] train=0.6 val=0.55\n')
    assert main([str(log), '-o', str(tmp_path / 'curves')]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / 'curves.png')
    assert (tmp_path / 'curves.png').is_file()
    assert main([str(log), '-o', str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / 'validation_curves.png')
    assert (tmp_path / 'validation_curves.png').is_file()


def one_line_error(capsys, fragment):
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and fragment in err[0], err
    return captured.out


@pytest.fixture
def blocked(tmp_path):
    """A file where an output's folder should be: no one can write below it (not even root,
    whom chmod does not stop)."""
    path = tmp_path / 'a-file'
    path.write_text('not a folder')
    return path


def test_cam_refuses_an_unwritable_output_before_any_work(blocked, tmp_path, capsys):
    bad = blocked / 'out.png'
    # the image is missing too: the output is checked first
    assert cam_main('cifar_aff_resnet20', '--image', tmp_path / 'none.png', '-o', bad) == 2
    one_line_error(capsys, f'-o {bad}: no such folder')


def test_plotlog_refuses_an_unwritable_output_before_drawing(blocked, tmp_path, capsys):
    from openaff.cli.plotlog import main as plotlog_main
    log = tmp_path / 'run.log'
    log.write_text('[Epoch 0] train=0.5 val=0.40\n')
    assert plotlog_main([str(log), '-o', str(blocked / 'out.png')]) == 2
    one_line_error(capsys, f'-o {blocked / "out.png"}: no such folder')
    assert plotlog_main([str(log), '-o', str(tmp_path / 'x.docx')]) == 2
    one_line_error(capsys, f'-o {tmp_path / "x.docx"}: cannot write .docx')


def test_summary_refuses_an_unwritable_json_before_counting(blocked, capsys):
    from openaff.cli.summary import main as summary_main
    assert summary_main(['cifar_aff_resnet20', '--json', str(blocked / 's.json')]) == 2
    assert one_line_error(capsys, f'--json {blocked / "s.json"}') == ''  # nothing printed


def test_evaluate_refuses_an_unwritable_json_before_evaluating(blocked, tiny_run, tmp_path,
                                                                capsys):
    params, rec, idx = tiny_run
    assert evaluate_main(params, '--dataset', 'imagenet', '--use-rec', '--rec-val', rec,
                         '--rec-val-idx', idx, '--rec-train', rec, '--rec-train-idx', idx,
                         '--json', blocked / 'r.json') == 2
    assert one_line_error(capsys, f'--json {blocked / "r.json"}: no such folder') == ''
