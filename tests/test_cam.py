"""Grad-CAM and MS-CAM attention maps on scikit-learn's two sample photos, with random
weights: shapes, finiteness, maps that depend on the class, and the figure command for a zoo
network beside a GluonCV baseline."""
import mxnet as mx
import numpy as np
import pytest
from sklearn.datasets import load_sample_images

from openaff import get_model, model_info
from openaff.apps.cam import attention_maps, grad_cam, preprocess, stages_of
from openaff.cli.cam import main

PHOTOS = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640 RGB


def batch_for(name, photo):
    info = model_info(name)
    return preprocess(photo, info.mean, info.std, 64 if info.input_size > 32 else 32)


@pytest.fixture(scope='module')
def nets():
    built = {}
    for name in ('cifar_aff_resnet32', 'cifar_iaff_resnet32', 'aff_resnet50'):
        net = get_model(name, classes=10)
        net.initialize(mx.init.Xavier(rnd_type='gaussian', magnitude=2))
        built[name] = net
    return built


@pytest.mark.parametrize('name', ['cifar_aff_resnet32', 'cifar_iaff_resnet32', 'aff_resnet50'])
@pytest.mark.parametrize('photo', [0, 1])
def test_grad_cam_is_a_normalised_map_that_depends_on_the_class(nets, name, photo):
    batch = batch_for(name, PHOTOS[photo])
    maps = [grad_cam(nets[name], batch, class_index=c)[0] for c in range(4)]
    for heat in maps:
        assert heat.shape == batch.shape[2:] and np.isfinite(heat).all()
        assert heat.min() >= 0 and heat.max() <= 1
    assert any(np.abs(maps[0] - other).max() > 1e-3 for other in maps[1:])
    _, logits = grad_cam(nets[name], batch)
    assert logits.shape == (10,)


@pytest.mark.parametrize('name, stages', [('cifar_aff_resnet32', 3), ('cifar_iaff_resnet32', 3),
                                          ('aff_resnet50', 2)])
def test_attention_maps_of_the_last_fusion_of_each_stage(nets, name, stages):
    """The released ImageNet nets fuse from stage 3 on: two stages have attention."""
    batch = batch_for(name, PHOTOS[0])
    maps = attention_maps(nets[name], batch)
    assert len(maps) == stages
    for _label, heat in maps:
        assert heat.shape == batch.shape[2:] and np.isfinite(heat).all()
    assert np.abs(maps[0][1] - maps[-1][1]).max() > 1e-3


def test_the_stages_of_gluoncv_networks_are_found():
    from gluoncv.model_zoo import get_model as gluoncv_model
    for name, count in (('cifar_resnet20_v1', 3), ('resnet18_v1b', 4)):
        assert len(stages_of(gluoncv_model(name, classes=10))[1]) == count


def test_command_draws_the_figure_beside_a_baseline(tmp_path, capsys):
    photo = tmp_path / 'china.png'
    from PIL import Image
    Image.fromarray(PHOTOS[0]).save(photo)
    out = tmp_path / 'cam.png'
    assert main(['cifar_aff_resnet32', '--image', str(photo), '--compare',
                 'gluoncv:cifar_resnet20_v1', '-o', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'cifar_aff_resnet32: class' in printed and 'gluoncv:cifar_resnet20_v1: class' in printed
    assert out.stat().st_size > 10_000
    assert main(['cifar_aff_resnet32', '--image', str(tmp_path / 'none.png')]) == 2
    assert main(['cifar_aff_resnet32', '--image', str(photo), '--stage', '7']) == 2
    assert main(['cifar_aff_resnet32', '--image', str(photo), '--compare', 'vgg']) == 2
    assert all(line.startswith('error: ') for line in capsys.readouterr().err.splitlines())
