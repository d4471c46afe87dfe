"""Builders refuse numbers they cannot build from, and networks refuse batches of a layout they
cannot take, with a one-line ValueError before MXNet sees them."""
import mxnet as mx
import pytest

from openaff import get_model
from openaff.fusion import get_fusion, list_fusions
from openaff.models import AFFResNet, CIFARAFFResNet


@pytest.mark.parametrize('build, message', [
    (lambda: get_fusion('AFF', 16, r=0), 'reduction ratio'),
    (lambda: get_fusion('iAFF', 16, r=32), 'no channel of 16'),
    (lambda: get_fusion('MSCAM', 0), 'channels'),
    (lambda: get_model('cifar_aff_resnet32', classes=0), 'classes'),
    (lambda: get_model('aff_resnet50', clases=10), 'clases'),
    (lambda: get_model('aff_resnet50', start_layer=5), 'start_layer'),
    (lambda: CIFARAFFResNet('ASKCFuse', 1, [0, 0, 0], [16, 16, 32, 64], 10, False), 'layers'),
    (lambda: CIFARAFFResNet('ASKCFuse', 1, [1, 1, 1], [16, 0, 32, 64], 10, False), 'widths'),
    (lambda: CIFARAFFResNet('ASKCFuse', 4, [1, 1, 1], [16, 16, 32, 64], 10, False),
     'start_layer'),
    (lambda: AFFResNet('ASKCFuse', 3, [], classes=10), 'layers'),
])
def test_builders_refuse_numbers_they_cannot_use(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.fixture(scope='module')
def trained_shape_net():
    """A CIFAR net whose first convolution knows its 3 input channels (as a loaded one)."""
    net = get_model('cifar_aff_resnet32')
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    return net


@pytest.mark.parametrize('hybridize', [False, True])
@pytest.mark.parametrize('shape, message', [
    ((2, 32, 32, 3), 'channels-last'),
    ((3, 32, 32), r'\(N, C, H, W\)'),
    ((2, 1, 32, 32), r'\(N, 3, H, W\)'),
    ((2, 3, 2, 2), 'at least 4x4'),
])
def test_networks_refuse_batches_of_another_layout_and_keep_working(trained_shape_net, shape,
                                                                    message, hybridize):
    """Feeding (N, 32, 32, 3) to a loaded net, then using it again, aborted the process in
    MXNet's BatchNorm (double free)."""
    net = trained_shape_net
    if hybridize:
        net.hybridize()
    with pytest.raises(ValueError, match=message):
        net(mx.nd.zeros(shape))
    assert net(mx.nd.zeros((2, 3, 32, 32))).shape == (2, 100)


def test_imagenet_networks_need_room_for_their_strides():
    net = get_model('aff_resnet50', classes=10)
    net.initialize()
    with pytest.raises(ValueError, match='at least 32x32'):
        net(mx.nd.zeros((1, 3, 16, 16)))
    assert net(mx.nd.zeros((1, 3, 32, 32))).shape == (1, 10)


@pytest.mark.parametrize('name', list_fusions())
def test_fusion_blocks_refuse_maps_they_were_not_built_for(name):
    """A wrong channel count or two maps of different shapes is named in the block's words,
    not by an operator about a tensor the user never passed."""
    block = get_fusion(name, channels=16)
    block.initialize()
    if getattr(block, '_channels', None) is None:
        pytest.skip(f'{name} derives its weights from another block')
    narrow = mx.nd.ones((2, 8, 4, 4))
    with pytest.raises(ValueError, match='built for maps of 16 channels'):
        block(narrow, narrow)
    with pytest.raises(ValueError, match='two maps of one shape'):
        block(mx.nd.ones((2, 16, 4, 4)), mx.nd.ones((2, 16, 4, 2)))
