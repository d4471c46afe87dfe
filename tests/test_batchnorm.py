"""Running statistics: every one is maintained in training; precise BN; branch momentum."""
import mxnet as mx
import numpy as np
import pytest
from conftest import ones_for_gammas, random_input

from openaff import get_model, list_models, model_info
from openaff._gluon import batch_norms
from openaff.batchnorm import fusion_batch_norms, precise_bn, set_bn_momentum

TINY_CIFAR = dict(layers=[1, 1, 1], channels=[8, 8, 16, 32], classes=10)


def running_stats(net):
    return {key: p.data().asnumpy().copy() for key, p in net._collect_params_with_prefix().items()
            if 'running' in key}


def train_step(net, x, hybridize):
    if hybridize:
        net.hybridize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'nag', {'learning_rate': 0.1, 'momentum': 0.9})
    labels = mx.nd.array(np.arange(x.shape[0]) % 10)
    with mx.autograd.record():
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(net(x), labels)
    loss.backward()
    trainer.step(x.shape[0])


@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybrid'])
@pytest.mark.parametrize('name', list_models())
def test_every_running_statistic_changes_after_a_training_step(name, hybridize):
    net = get_model(name)
    net.initialize(mx.init.Xavier())
    size = 32 if model_info(name).dataset == 'cifar100' else 64
    x = random_input(4, 3, size, size) + 2  # an input mean far from the initial 0
    net(x[:1])
    ones_for_gammas(net)
    before = running_stats(net)
    train_step(net, x, hybridize)
    after = running_stats(net)
    frozen = [key for key in before if np.array_equal(before[key], after[key])]
    assert not frozen


def test_input_batchnorm_tracks_the_input_like_the_others():
    net = get_model('cifar_aff_resnet32', **TINY_CIFAR)
    net.initialize()
    x = random_input(8, 3, 32, 32) * 3 + 5
    net(x[:1])
    train_step(net, x, hybridize=True)
    data = x.asnumpy()
    np.testing.assert_allclose(net.features[0].running_mean.data().asnumpy(),
                               0.1 * data.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(net.features[0].running_var.data().asnumpy(),
                               0.9 + 0.1 * data.var(axis=(0, 2, 3)), rtol=1e-5)


def test_original_input_batchnorm_behaviour_is_reachable():
    net = get_model('cifar_aff_resnet32', track_input_stats=False, **TINY_CIFAR)
    net.initialize()
    x = random_input(4, 3, 32, 32) + 2
    net(x[:1])
    train_step(net, x, hybridize=False)
    assert not net.features[0].running_mean.data().asnumpy().any()
    assert (net.features[0].running_var.data().asnumpy() == 1).all()


def batches(n, batch=16, seed=0):
    rng = np.random.RandomState(seed)
    return [mx.nd.array(rng.normal(1.5, 2.0, size=(batch, 3, 32, 32)).astype('float32'))
            for _ in range(n)]


def test_precise_bn_sets_population_statistics():
    net = get_model('cifar_aff_resnet32', **TINY_CIFAR)
    net.initialize(mx.init.Xavier())
    data = batches(4)
    assert precise_bn(net, data) == len(batch_norms(net))
    stacked = np.concatenate([d.asnumpy() for d in data])
    np.testing.assert_allclose(net.features[0].running_mean.data().asnumpy(),
                               stacked.mean(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(net.features[0].running_var.data().asnumpy(),
                               stacked.var(axis=(0, 2, 3)), rtol=1e-4)


def test_precise_bn_makes_inference_match_batch_statistics_on_one_big_batch():
    """With one batch holding all the data, population statistics are the batch statistics:
    inference-mode outputs must then equal training-mode outputs."""
    net = get_model('cifar_aff_resnet32', **TINY_CIFAR)
    net.initialize(mx.init.Xavier())
    (x,) = batches(1, batch=32)
    net(x)
    ones_for_gammas(net)
    with mx.autograd.train_mode():
        train_out = net(x).asnumpy()
    assert not np.allclose(net(x).asnumpy(), train_out, atol=1e-3)
    precise_bn(net, [x])
    np.testing.assert_allclose(net(x).asnumpy(), train_out, rtol=1e-3, atol=1e-3)


def test_precise_bn_respects_num_batches_and_leaves_weights_alone():
    net = get_model('cifar_aff_resnet32', **TINY_CIFAR)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    data = batches(3)
    net(data[0])
    weights = {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()
               if 'running' not in k}
    precise_bn(net, iter([(d, None) for d in data]), num_batches=1)
    one = net.features[0].running_mean.data().asnumpy()
    np.testing.assert_allclose(one, data[0].asnumpy().mean(axis=(0, 2, 3)), rtol=1e-4)
    for key, value in weights.items():
        np.testing.assert_array_equal(net._collect_params_with_prefix()[key].data().asnumpy(),
                                      value)
    with pytest.raises(ValueError):
        precise_bn(net, [])


def test_branch_momentum_reaches_only_the_attention_batchnorms():
    net = get_model('cifar_aff_resnet32', **TINY_CIFAR)
    changed = set_bn_momentum(net, 0.5)
    inside = fusion_batch_norms(net)
    assert changed == len(inside) > 0
    assert {n._kwargs['momentum'] for n in inside} == {0.5}
    outside = [n for n in batch_norms(net) if all(n is not m for m in inside)]
    assert {n._kwargs['momentum'] for n in outside} == {0.9}
    net.initialize()
    x = random_input(4, 3, 32, 32) + 1
    net(x[:1])
    norm = inside[0]
    train_step(net, x, hybridize=True)
    # the first update moves the statistics by (1 - momentum) of the way
    assert np.abs(norm.running_var.data().asnumpy() - 1).max() > 0
