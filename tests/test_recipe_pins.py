"""Fast pins on recipe details that otherwise only the slow parity runs, or the ../shared
fixtures, would notice: mixup with label smoothing, the reduction-ratio check, the inference
fold's BatchNorm epsilon, the fusion BatchNorms' momentum, the CIFAR step decay and resuming
after a checkpoint's epoch."""
import inspect
import logging
import os
import shutil

import mxnet as mx
import numpy as np
import pytest
from conftest import classifier_engine
from mxnet import autograd
from mxnet.gluon import nn

from openaff.fusion import FUSIONS, get_fusion, graph_mode, list_fusions


# ---------------------------------------------------------------- mixup with label smoothing
def test_mixup_mixes_the_smoothed_targets_of_both_partners():
    """With mixup and label smoothing on (the recipe of the released CIFAR runs), both the
    sample's target and its partner's (the batch reversed) are smoothed before mixing: every
    class keeps at least eta/K and each row sums to one."""
    from openaff.engine.targets import mixup_batch
    from openaff.engine.tasks import Classification
    labels, classes, lam, eta = np.array([0, 2, 3]), 4, 0.75, 0.1
    smoothed = (1 - eta) * np.eye(classes)[labels] + eta / classes
    expected = lam * smoothed + (1 - lam) * smoothed[::-1]
    # by hand for the first sample (label 0, partner label 3):
    # 0.75 * [.925 .025 .025 .025] + 0.25 * [.025 .025 .025 .925]
    np.testing.assert_allclose(expected[0], [0.7, 0.025, 0.025, 0.25])
    data = mx.nd.array(np.arange(3 * 2, dtype='float32').reshape(3, 2))
    for mixed, targets in (mixup_batch(data, mx.nd.array(labels), classes, lam, eta),
                           Classification(classes).targets(data, mx.nd.array(labels), lam, eta)):
        np.testing.assert_allclose(targets.asnumpy(), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(mixed.asnumpy(),
                                   lam * data.asnumpy() + (1 - lam) * data.asnumpy()[::-1])
        assert targets.asnumpy().min() >= eta / classes - 1e-7


# ---------------------------------------------------------------- the reduction ratio
def _takes_r(name):
    return 'r' in inspect.signature(FUSIONS[name].__init__).parameters


@pytest.mark.parametrize('r', [0.5, 0.999, 1e-3])
@pytest.mark.parametrize('name', [n for n in list_fusions() if _takes_r(n)])
def test_reduction_ratios_below_one_are_refused(name, r):
    """MS-CAM's bottleneck is C/r channels with r >= 1: a ratio in (0, 1) would widen the
    bottleneck beyond C, which no configuration of the paper has, and is refused up front."""
    with pytest.raises(ValueError, match=r'\br\b|reduction'):
        get_fusion(name, 16, r=r)


# ---------------------------------------------------------------- the inference fold's epsilon
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get('CXX', 'g++')) is None,
                                    reason='no C++ compiler: the native operators cannot be built')


def _graph_json(block):
    """The JSON of the graph a hybridized block last ran."""
    graph = getattr(block, '_device_graph', None) or block._cached_graph
    return graph[1].tojson()


def _batch_norms(block):
    found = []
    for child in block._children.values():
        found += [child] if isinstance(child, nn.BatchNorm) else _batch_norms(child)
    return found


def _near_eps_statistics(block, seed=1):
    """Running variances of 1e-4..1e-3, where BatchNorm's eps=1e-5 moves the normalised
    values by 0.5-5 %; gammas scaled so that the attention logits stay O(1) (a saturated
    sigmoid would hide the epsilon)."""
    rng = np.random.RandomState(seed)
    for name, param in block.collect_params().items():
        if name.endswith('running_var'):
            value = rng.uniform(1e-4, 1e-3, param.shape)
        elif name.endswith('gamma'):
            value = rng.uniform(0.01, 0.03, param.shape)
        else:
            value = rng.normal(0, 0.3, param.shape)
        param.set_data(mx.nd.array(value))


def _without_eps(block, x, y):
    norms = _batch_norms(block)
    saved = [norm._kwargs['eps'] for norm in norms]
    for norm in norms:
        norm._kwargs['eps'] = 0.0
    try:
        return block(x, y).asnumpy()
    finally:
        for norm, eps in zip(norms, saved):
            norm._kwargs['eps'] = eps


@needs_compiler
@pytest.mark.parametrize('name', ['ASKCFuse', 'ResGlobLocaforGlobLocaChaFuse'])
def test_folded_inference_keeps_the_batchnorm_epsilon(name):
    """The inference graph folds each MS-CAM branch's BatchNorms into its convolutions with
    ``gamma / sqrt(running_var + eps)``; with running variances near eps the fold must still
    equal MXNet's unfolded BatchNorm to float32 round-off."""
    rng = np.random.RandomState(0)
    x, y = (mx.nd.array(rng.normal(0, 1, (2, 16, 5, 7)).astype('float32')) for _ in range(2))
    block = get_fusion(name, 16)
    block.initialize()
    block(x, y)  # the parameters get their shapes
    _near_eps_statistics(block)
    expected = block(x, y).asnumpy()  # imperative inference: MXNet's BatchNorm
    # the data are sensitive to the epsilon: dropping it moves the output by about a percent
    assert np.abs(_without_eps(block, x, y) - expected).max() > 2e-3 * np.abs(expected).max()
    block.hybridize()
    with graph_mode('inference'):
        folded = block(x, y).asnumpy()
    assert 'openaff_mscam_select' in _graph_json(block)
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@needs_compiler
def test_a_networks_folded_inference_keeps_the_batchnorm_epsilon():
    """A zoo network's first inference call runs the folded graph: with its fusion branches'
    running variances near eps it gives what the unfolded network gives."""
    from openaff.batchnorm import fusion_batch_norms
    from openaff.models.cifar import CIFARAFFResNet
    net = CIFARAFFResNet('ResGlobLocaforGlobLocaChaFuse', 1, [1, 1, 1], [8, 8, 8, 8], 4, False)
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (2, 3, 8, 8)).astype('float32'))
    net(x)
    rng = np.random.RandomState(2)
    for norm in fusion_batch_norms(net):
        norm.running_var.set_data(mx.nd.array(rng.uniform(1e-4, 1e-3, norm.running_var.shape)))
        norm.gamma.set_data(mx.nd.array(rng.uniform(0.01, 0.03, norm.gamma.shape)))
        norm.running_mean.set_data(mx.nd.array(rng.normal(0, 0.3, norm.running_mean.shape)))
    expected = net(x).asnumpy()
    net.hybridize(static_alloc=True)
    folded = net(x).asnumpy()
    assert 'openaff_mscam_select' in _graph_json(net)
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------- the fusion BatchNorms' momentum
def _bn_inputs(norms):
    """Hooks that keep each BatchNorm's inputs, per call, in float64."""
    seen = {id(norm): [] for norm in norms}
    for norm in norms:
        norm.register_forward_pre_hook(
            lambda block, inputs: seen[id(block)].append(inputs[0].asnumpy().astype('float64')))
    return seen


def _assert_one_momentum_step(norms, seen):
    """Starting from MXNet's initial statistics (mean 0, variance 1), one step with momentum
    0.9 leaves ``0.1 * batch mean`` and ``0.9 + 0.1 * biased batch variance``."""
    checked, informative = 0, False
    for norm in norms:
        if len(seen[id(norm)]) != 1:  # a BatchNorm called twice would update twice
            continue
        data = seen[id(norm)][0]
        mean, var = data.mean(axis=(0, 2, 3)), data.var(axis=(0, 2, 3))
        scale = max(1.0, np.abs(mean).max())
        np.testing.assert_allclose(norm.running_mean.data().asnumpy(), 0.1 * mean, rtol=1e-5,
                                   atol=1e-6 * scale, err_msg=f'{norm.name}: running mean')
        np.testing.assert_allclose(norm.running_var.data().asnumpy(), 0.9 + 0.1 * var,
                                   rtol=1e-5, atol=1e-6, err_msg=f'{norm.name}: running var')
        checked += 1
        informative |= bool(np.abs(mean).max() > 0.05)
    assert checked and informative


@pytest.mark.parametrize('name', [n for n in list_fusions() if _batch_norms(get_fusion(n, 8))])
def test_a_training_step_moves_fusion_statistics_with_momentum_0_9(name):
    """The fusion blocks' BatchNorms keep MXNet's momentum 0.9 (the original's): one training
    step moves each running mean from 0 by 0.1 of the batch mean, and each running variance
    from 1 by 0.1 of the step towards the batch variance."""
    rng = np.random.RandomState(0)
    x = mx.nd.array(rng.normal(1.0, 1, (4, 8, 5, 5)).astype('float32'))
    y = mx.nd.array(rng.normal(-0.5, 1, (4, 8, 5, 5)).astype('float32'))
    block = get_fusion(name, 8)
    block.initialize(mx.init.Xavier())
    norms = _batch_norms(block)
    seen = _bn_inputs(norms)
    with autograd.record(train_mode=True):
        out = block(x, y)
    out.backward()  # MXNet updates the running statistics in the backward pass
    _assert_one_momentum_step(norms, seen)


def test_a_networks_training_step_moves_fusion_statistics_with_momentum_0_9():
    """The same in a CIFAR AFF-ResNet as the training script builds it."""
    from openaff.batchnorm import fusion_batch_norms
    from openaff.models.cifar import CIFARAFFResNet
    net = CIFARAFFResNet('ASKCFuse', 1, [1, 1, 1], [8, 8, 8, 8], 4, False)
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(0).uniform(-1, 1, (4, 3, 8, 8)).astype('float32'))
    net(x)
    norms = fusion_batch_norms(net)
    seen = _bn_inputs(norms)
    with autograd.record(train_mode=True):
        loss = net(x).square().sum()
    loss.backward()
    _assert_one_momentum_step(norms, seen)


# ---------------------------------------------------------------- the CIFAR step decay
def _original_cifar_rates(num_epochs, lr, decay_epochs, warmup_epochs, factor):
    """The learning rate each epoch trains with, as the original train_cifar.py sets it
    without --cosine: decay epochs counted with the warm-up subtracted, and
    ``trainer.set_learning_rate`` before the epoch's first batch when the epoch is the next
    decay epoch."""
    steps = [e - warmup_epochs for e in decay_epochs] + [np.inf]
    rates, count = [], 0
    for epoch in range(num_epochs):
        if epoch == steps[count]:
            lr *= factor
            count += 1
        rates.append(lr)
    return rates


def test_cifar_step_decay_applies_from_the_first_update_of_its_epoch():
    """train_cifar.py's default schedule (lr 0.2, --lr-decay-epoch 300,450, warm-up 10 not
    used without --cosine): 0.2 until epoch 289, 0.02 from the first update of epoch 290,
    0.002 from the first update of epoch 440; each epoch's last update keeps its epoch's
    rate. Read from what MXNet's optimizer really applies (updates numbered from 1)."""
    from openaff.cli.train_cifar import build_parser, recipe_of
    from openaff.engine import make_lr_scheduler
    recipe = recipe_of(build_parser().parse_args([]), seed=0)
    assert recipe.lr_mode == 'epoch_step' and recipe.warmup_epochs == 0
    iters, epochs = 3, 442
    schedule = make_lr_scheduler(recipe.lr_mode, recipe.lr, recipe.num_epochs, iters,
                                 recipe.warmup_epochs, recipe.warmup_lr, recipe.step_epochs,
                                 recipe.step_factor)
    weight = mx.gluon.Parameter('w', shape=(1,), dtype='float64')
    weight.initialize(mx.init.Zero())
    trainer = mx.gluon.Trainer([weight], 'sgd', {'lr_scheduler': schedule, 'momentum': 0.0,
                                                 'wd': 0.0}, kvstore=None)
    applied = []
    for _ in range(epochs * iters):
        weight.set_data(mx.nd.zeros(1, dtype='float64'))
        with autograd.record():
            weight.data().sum().backward()  # gradient 1: the step is the learning rate
        trainer.step(1)
        applied.append(-weight.data().asscalar())
    first = {epoch: applied[epoch * iters] for epoch in range(epochs)}
    last = {epoch: applied[epoch * iters + iters - 1] for epoch in range(epochs)}
    # the optimizer's kernel takes the rate as a float32
    assert [first[e] for e in (0, 289, 290, 291, 439, 440, 441)] == pytest.approx(
        [0.2, 0.2, 0.02, 0.02, 0.02, 0.002, 0.002], rel=1e-7)
    original = _original_cifar_rates(epochs, 0.2, [300, 450], 10, 0.1)
    np.testing.assert_allclose([first[e] for e in range(epochs)], original, rtol=1e-7)
    np.testing.assert_allclose([last[e] for e in range(epochs)], original, rtol=1e-7)


# ---------------------------------------------------------------- resuming after an epoch
def _tiny_run(save_dir, batches):
    from openaff.engine import Recipe
    from openaff.engine.loop import seed_everything
    from openaff.models.cifar import CIFARAFFResNet
    seed_everything(7)
    net = CIFARAFFResNet('ASKCFuse', 1, [1, 1, 1], [8, 8, 8, 8], 4, False)
    net.initialize(mx.init.Xavier())
    recipe = Recipe(num_epochs=2, lr=0.05, mixup=True, label_smoothing=True, seed=3,
                    lr_mode='epoch_step', step_epochs=(1,))
    engine = classifier_engine(net, recipe, [mx.cpu()], batches, batches[:1], 4, 'tiny',
                               str(save_dir))
    trained = []
    train_epoch = engine.train_epoch
    engine.train_epoch = lambda epoch: trained.append(epoch) or train_epoch(epoch)
    return net, engine, trained


def _parameters(net):
    return {key: param.data().asnumpy() for key, param in
            net._collect_params_with_prefix().items()}


def test_resuming_from_an_epoch_checkpoint_trains_the_next_epoch_only(tmp_path):
    """A run resumed from epoch 0's checkpoint continues at epoch 1 (logged as such), trains
    no epoch twice, and ends bit-identical (weights, running statistics, history) to the run
    that was never interrupted."""
    rng = np.random.RandomState(0)
    batches = [(mx.nd.array(rng.uniform(-1, 1, (8, 3, 8, 8)).astype('float32')),
                mx.nd.array(rng.randint(0, 4, 8).astype('float32'))) for _ in range(3)]
    whole_net, whole, trained = _tiny_run(tmp_path / 'whole', batches)
    history = whole.fit()
    assert trained == [0, 1]
    (tmp_path / 'resumed').mkdir()
    for name in ('tiny-epoch0000.params', 'tiny-epoch0000.states', 'tiny-checkpoint.json'):
        shutil.copy(tmp_path / 'whole' / name, tmp_path / 'resumed')
    net, resumed, trained = _tiny_run(tmp_path / 'resumed', batches)
    log, lines = logging.getLogger('openaff'), []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        again = resumed.fit(str(tmp_path / 'resumed' / 'tiny-epoch0000.params'))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert trained == [1]
    assert any(line.endswith('continuing at epoch 1') for line in lines), lines
    assert [r['epoch'] for r in again] == [0, 1]
    for mine, theirs in zip(again, history):
        assert {k: v for k, v in mine.items() if k not in ('time', 'speed')} == \
            {k: v for k, v in theirs.items() if k not in ('time', 'speed')}
    expected = _parameters(whole_net)
    for key, value in _parameters(net).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
