"""Inference graphs: each MS-CAM soft selection as one fused operator with the BatchNorms
folded (``openaff_mscam_select``), and the networks' separate graphs for inference and for
training."""
import os
import shutil

import mxnet as mx
import numpy as np
import pytest
from conftest import random_input
from mxnet import autograd

from openaff import ops
from openaff.fusion import get_fusion, graph_mode, list_fusions
from openaff.models.cifar import CIFARAFFResNet

if shutil.which(os.environ.get('CXX', 'g++')) is None:
    pytest.skip('no C++ compiler: the native operators cannot be built here',
                allow_module_level=True)


def foldable(channels):
    return [name for name in list_fusions()
            if getattr(get_fusion(name, channels), '_foldable', False)]


def test_aff_and_iaff_are_folded():
    assert {'ASKCFuse', 'ResGlobLocaforGlobLocaChaFuse'} <= set(foldable(16))


def randomise(block):
    """Running statistics, gammas and betas away from their initial values, so that folding
    them into the convolutions is exercised."""
    rng = np.random.RandomState(3)
    for name, param in block.collect_params().items():
        positive = name.endswith(('running_var', 'gamma'))
        value = rng.uniform(0.5, 1.5, param.shape) if positive else \
            rng.normal(0, 0.3, param.shape)
        param.set_data(mx.nd.array(value))


def folded_and_reference(name, channels, x, y):
    block = get_fusion(name, channels)
    block.initialize()
    block(x, y)  # imperative: gives the parameters their shapes
    randomise(block)
    expected = block(x, y).asnumpy()  # imperative inference: MXNet's BatchNorm, unfolded
    block.hybridize()
    with graph_mode('inference'):
        actual = block(x, y).asnumpy()
    return block, actual, expected


# channels 20 (r=4: 5 hidden) and 6 (1 hidden) are not multiples of the kernel's blocks of 4;
# 5x7 and 17x17 (two tiles of pixels) not multiples of its 32-pixel chunks
@pytest.mark.parametrize('channels, size', [(16, (5, 7)), (20, (17, 17)), (6, (3, 3))])
@pytest.mark.parametrize('name', foldable(16))
def test_folded_graph_matches_the_unfolded_inference(name, channels, size):
    if name not in foldable(channels):
        pytest.skip(f'{name} is not folded at {channels} channels')
    x, y = random_input(3, channels, *size), random_input(3, channels, *size)
    block, actual, expected = folded_and_reference(name, channels, x, y)
    assert 'openaff_mscam_select' in block._device_graph[1].tojson()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_wide_fusions_keep_the_general_graph():
    block, actual, expected = folded_and_reference('AFF', 1024, random_input(1, 1024, 2, 2),
                                                   random_input(1, 1024, 2, 2))
    graph = block._device_graph[1].tojson()
    assert 'openaff_mscam_select' not in graph and 'openaff_soft_select' in graph
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def small_net(seed=0):
    mx.random.seed(seed)
    net = CIFARAFFResNet('iAFF', 1, [1, 1, 1], [8, 8, 16, 16], 5, False)
    net.initialize(mx.init.Xavier())
    return net


def train_step(net, x, labels):
    with autograd.record():
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(x), labels)
    loss.backward()
    return loss.asnumpy(), {k: p.grad().asnumpy() for k, p in net.collect_params().items()
                            if p.grad_req != 'null'}


def test_networks_keep_a_graph_per_mode():
    x, labels = random_input(4, 3, 12, 12), mx.nd.array([0, 1, 2, 3])
    net, twin = small_net(), small_net()  # the twin never runs an inference graph
    net.hybridize(static_alloc=True)
    twin.hybridize(static_alloc=True)
    first = net(x).asnumpy()  # the first call: parameters without shapes, then folded
    assert 'openaff_mscam_select' in net._device_graph[1].tojson()
    # the shapes came from the general graph without running it: no CachedOp of its own
    assert net._mode_graphs['any'][1] is None
    assert (net(x).asnumpy() == first).all()
    with autograd.record():
        twin(x)  # shapes, with the general graph only
    for mine, other in zip(net.collect_params().values(), twin.collect_params().values()):
        other.set_data(mine.data())
    loss, grads = train_step(net, x, labels)
    graph = net._device_graph[1].tojson()
    assert 'openaff_mscam_select' not in graph and 'openaff_soft_select' in graph
    twin_loss, twin_grads = train_step(twin, x, labels)
    np.testing.assert_array_equal(loss, twin_loss)
    for key, grad in grads.items():
        np.testing.assert_array_equal(grad, twin_grads[key.replace(net.prefix, twin.prefix)])
    # training moved the running statistics: the inference graph reads the new ones
    after = net(x).asnumpy()
    assert 'openaff_mscam_select' in net._device_graph[1].tojson()
    net.hybridize(False)
    np.testing.assert_allclose(after, net(x).asnumpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(after, first)


def test_gradients_in_inference_mode_use_the_general_graph():
    """Grad-CAM and the like record gradients with running BatchNorm statistics."""
    net = small_net()
    net.hybridize()
    x = random_input(2, 3, 12, 12)
    folded = net(x).asnumpy()
    x.attach_grad()
    with autograd.record(train_mode=False):
        out = net(x)
    out.backward()
    np.testing.assert_allclose(out.asnumpy(), folded, rtol=1e-5, atol=1e-5)
    assert np.abs(x.grad.asnumpy()).max() > 0


def operator_inputs(channels=8, hidden=2, size=(3, 3)):
    maps = [mx.nd.ones((2, channels) + size) for _ in range(2)]
    branch = [mx.nd.ones(shape) for shape in [(hidden, channels, 1, 1)] + [(hidden,)] * 5 +
              [(channels, hidden, 1, 1)] + [(channels,)] * 5]
    return maps, branch


def test_inference_operator_refuses_gradients():
    assert ops.available()
    maps, branch = operator_inputs()
    for array in maps:
        array.attach_grad()
    with autograd.record():
        out = mx.nd.openaff_mscam_select(*maps, *branch, *branch, scale=2, sum_source=True)
    with pytest.raises(mx.base.MXNetError, match='inference operator'):
        out.backward()
        mx.nd.waitall()


def test_inference_operator_rejects_mismatched_branches():
    maps, branch = operator_inputs()
    _, narrow = operator_inputs(channels=4)
    with pytest.raises(mx.base.MXNetError, match='each branch needs'):
        mx.nd.openaff_mscam_select(*maps, *branch, *narrow, scale=2,
                                   sum_source=True).wait_to_read()
