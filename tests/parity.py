"""Training parity with the original code: the trajectories of ``../shared/compat/training``
(initial weights, exact batches, weights and NAG momentum after every step, float64 gradients)
replayed through the port's public API.

Tolerances follow the fixtures' README: a tensor after a step agrees when
``|port - original| <= 10 * max(noise, spacing(max|w|))`` with the original's own float32 noise
for that step; a float32 gradient ``g`` is as good as the original's when ``|g - g64|`` is of the
order of ``|g32 - g64|``.

The original's float32 numbers were made on a CPU with AVX-512. On an AVX2 CPU, oneDNN's
BatchNorm (and MXNet's own, without oneDNN) sums each channel in one running sum where the
AVX-512 kernel keeps four: on the ResNeXt fixture the float32 gradients of every algebra, the
original's included, land up to 1400 times further from float64 than the original's did. So each
float32 comparison also allows the machine's float32 round-off, measured on the machine running
the tests as the smallest distance between *another* algebra's float32 result and the port's own
float64 result for the same step (:func:`floor_of`). A bug is in the float64 result as much as in
the float32 one, so it does not widen this floor; nor does a problem of the algebra under test.
The port's float64 results themselves are checked against the original's: the gradients
(:func:`float64_pass`) and a whole optimizer step (:func:`float64_step`: network, trainer and the
running statistics' update rule).
"""
from __future__ import annotations

import functools
import json

import mxnet as mx
import numpy as np
from conftest import COMPAT
from mxnet import autograd, gluon
from mxnet.gluon import nn

from openaff import fusion

TRAINING = COMPAT / 'training'
NOISE_FACTOR = 10
# |g - g64| / |g32 - g64|: 1-5 is float32 round-off (README); a wrong gradient reads tens
GRADIENT_RATIO_LIMIT = 8.0
# an exact gradient this small next to the network's largest is zero up to float64 round-off
ZERO_GRADIENT = 1e-9
# the port's float64 gradients against the original's, relative to the largest: measured 5e-14;
# a wrong weight, operation or epsilon reads 1e-6 or more
FLOAT64_GRADIENT_LIMIT = 1e-9
# Gluon's BatchNorm momentum, which the original never changes
BN_MOMENTUM = float(np.float32(0.9))  # mxnet keeps it in float32
# a running statistic's float64 update against m r + (1 - m) s, relative to its scale: measured
# 6e-14; momentum 0.99 in the fusion BatchNorms is 0.5 off
STATISTICS_LIMIT = 1e-10


def fixture_names():
    return sorted(p.parent.name for p in TRAINING.glob('*/config.json')) if TRAINING.exists() \
        else []


class Fixture:
    """One trajectory directory."""

    def __init__(self, name):
        self.root = TRAINING / name
        self.name = name
        self.config = json.loads((self.root / 'config.json').read_text())
        batches = np.load(self.root / 'batches.npz')
        self.x, self.target, self.label = batches['x'], batches['target'], batches['label']
        self.lam = batches['lam']
        self.steps = self.config['steps']
        self.sparse = self.config['loss']['sparse_label']

    def params_file(self, step):
        return self.root / ('init.params' if step == 0 else f'step{step}.params')

    def weights(self, step):
        return {k: v.asnumpy() for k, v in mx.nd.load(str(self.params_file(step))).items()}

    def momentum(self, step):
        if step == 0:
            return None
        return mx.nd.load(str(self.root / f'momentum_step{step}.nd'))

    def grads(self, step, bits):
        return {k: v.asnumpy() for k, v in
                mx.nd.load(str(self.root / f'grad{bits}_step{step}.nd')).items()}

    def build(self):
        """The port's network, as ``config.json`` says, with the initial weights, hybridized
        as the original script did."""
        import openaff
        from openaff import models
        port = self.config['port']
        if 'get_model' in port:
            net = openaff.get_model(port['get_model'], **port['kwargs'])
        else:
            net = getattr(models, port['api'].rsplit('.', 1)[1])(**port['kwargs'])
        net.load_parameters(str(self.params_file(0)), ctx=mx.cpu())
        net.hybridize()
        return net

    def loss_fn(self):
        return gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=self.sparse)

    def batch(self, step, dtype='float32'):
        """Inputs and loss targets of step ``step`` (0-based)."""
        return mx.nd.array(self.x[step], dtype=dtype), mx.nd.array(self.target[step], dtype=dtype)

    def trainer(self, net, lr_factor=1.0):
        spec = self.config['trainer']
        params = dict(spec['optimizer_params'])
        params['learning_rate'] *= lr_factor
        return gluon.Trainer(net.collect_params(), spec['optimizer'], params)

    @property
    def step_batch_size(self):
        return self.config['trainer']['step_batch_size']

    @property
    def gradient_share(self):
        """How much of a gradient difference one NAG step passes to the weights:
        ``w -= lr (g' + momentum (momentum m + g'))`` with ``g' = g / batch + wd w``."""
        spec = self.config['trainer']['optimizer_params']
        assert self.config['trainer']['optimizer'] == 'nag'
        return spec['learning_rate'] * (1 + spec['momentum']) / self.step_batch_size


def load_weights(net, weights):
    for name, param in net._collect_params_with_prefix().items():
        param.set_data(mx.nd.array(weights[name], dtype=param.dtype))


def set_momentum(trainer, net, momentum):
    """Start ``trainer``'s NAG from the original's momentum buffers."""
    if momentum is None:
        return
    index_of = {id(param): i for i, param in enumerate(trainer._params)}
    for updater in trainer._updaters:
        for name, param in net._collect_params_with_prefix().items():
            if name in momentum:
                i = index_of[id(param)]
                updater.states[i] = momentum[name].astype(param.dtype).copyto(param.list_ctx()[0])
                updater.states_synced[i] = True


def weights_of(net):
    return {name: param.data().asnumpy().astype(np.float64)
            for name, param in net._collect_params_with_prefix().items()}


def backward(net, fixture, step, dtype='float32'):
    """The loss of step ``step``'s batch at the current weights, in ``dtype``, with the
    gradients of its sum queued (not waited for)."""
    x, target = fixture.batch(step, dtype)
    loss_fn = fixture.loss_fn()
    with autograd.record():
        loss = loss_fn(net(x), target)
    loss.backward()
    return loss


def gradients(net, fixture, step):
    """The port's float32 gradients of the batch's summed loss at the current weights."""
    backward(net, fixture, step)
    mx.nd.waitall()
    return grads_of(net)


def grads_of(net):
    return {name: param.grad().asnumpy()
            for name, param in net._collect_params_with_prefix().items()
            if param.grad_req != 'null'}


def train_step(net, trainer, fixture, step):
    loss = backward(net, fixture, step)
    mx.nd.waitall()  # without it mxnet 1.9.1 on CPU is not reproducible (fixtures' README)
    trainer.step(fixture.step_batch_size)
    mx.nd.waitall()
    return float(loss.mean().asscalar())


# ------------------------------------------------------- what each algebra does on this machine
# Computed once per fixture and algebra and shared by the tests: each test judges one algebra
# and takes its floor from the others.

@functools.cache
def float32_gradients(name, impl):
    """The port's float32 gradients at the original's weights of every step."""
    fixture = Fixture(name)
    with fusion.implementation(impl):
        net = fixture.build()
        out = []
        for step in range(fixture.steps):
            load_weights(net, fixture.weights(step))
            out.append(gradients(net, fixture, step))
    return out


@functools.cache
def teacher_forced(name, impl):
    """Per step k: the weights after one step from the original's step-k weights and momentum."""
    fixture = Fixture(name)
    out = []
    with fusion.implementation(impl):
        for step in range(fixture.steps):
            net = fixture.build()
            load_weights(net, fixture.weights(step))
            trainer = fixture.trainer(net)
            set_momentum(trainer, net, fixture.momentum(step))
            train_step(net, trainer, fixture, step)
            out.append(weights_of(net))
    return out


@functools.cache
def free_running(name, impl):
    """The port's own trajectory from ``init.params``: weights after every step, and losses."""
    fixture = Fixture(name)
    with fusion.implementation(impl):
        net = fixture.build()
        trainer = fixture.trainer(net)
        weights, losses = [], []
        for step in range(fixture.steps):
            losses.append(train_step(net, trainer, fixture, step))
            weights.append(weights_of(net))
    return weights, losses


@functools.cache
def float64_pass(name, impl, step):
    """The port cast to float64 at the original's step-``step`` weights: its gradients of the
    summed loss (every algebra runs its Python formula in float64) and the mean loss."""
    fixture = Fixture(name)
    with fusion.implementation(impl):
        net = fixture.build()
        net.cast('float64')
        load_weights(net, fixture.weights(step))
        loss = backward(net, fixture, step, 'float64')
    return grads_of(net), float(loss.mean().asscalar())


def float64_step(fixture, step, lr_factor=1.0):
    """One teacher-forced step in float64 (network, trainer, running statistics), imperative so
    that every BatchNorm's input is seen: the weights after it, and per BatchNorm (structural
    name) its input and momentum."""
    with fusion.implementation('reference'):  # float64: every algebra agrees to 1e-14
        net = fixture.build()
        net.hybridize(active=False)
        net.cast('float64')
        load_weights(net, fixture.weights(step))
        seen = {}

        def keep(name):
            def hook(block, inputs, output):
                seen[name] = (inputs[0].asnumpy(), float(block._kwargs['momentum']))
            return hook

        for name, block in _leaves(net).items():
            if isinstance(block, nn.BatchNorm):
                block.register_forward_hook(keep(name))
        trainer = fixture.trainer(net, lr_factor)
        set_momentum(trainer, net, fixture.momentum(step))
        backward(net, fixture, step, 'float64')
        trainer.step(fixture.step_batch_size)
        mx.nd.waitall()
    return weights_of(net), seen


@functools.cache
def float64_teacher_forced(name, step):
    """:func:`float64_step` from the original's step-``step`` state, once per fixture and step."""
    return float64_step(Fixture(name), step)


@functools.cache
def float64_free_running(name):
    """The port's own trajectory from ``init.params`` in float64: weights after every step, and
    losses."""
    fixture = Fixture(name)
    weights, losses = [], []
    with fusion.implementation('reference'):
        net = fixture.build()
        net.cast('float64')
        trainer = fixture.trainer(net)
        for step in range(fixture.steps):
            loss = backward(net, fixture, step, 'float64')
            trainer.step(fixture.step_batch_size)
            mx.nd.waitall()
            weights.append(weights_of(net))
            losses.append(float(loss.mean().asscalar()))
    return weights, losses


def _leaves(block, prefix=''):
    if not block._children:
        return {prefix: block}
    out = {}
    for key, child in block._children.items():
        out.update(_leaves(child, f'{prefix}.{key}' if prefix else key))
    return out


def step64_excess(fixture, step, weights64, seen):
    """Per tensor, after one float64 step from the original's step-``step`` state (> 1 fails).

    Parameters: ``|port64 - original|``, less the float32 error the original's own step carries
    and float64 is free of (:func:`original_step_error`), over ``10 * max(noise, spacing)``.
    Running statistics: the original's float32 batch statistics are not recorded, so the update
    rule is checked instead: ``m r + (1 - m) s`` with the original's momentum ``m`` (Gluon's 0.9,
    in float32 as mxnet keeps it) and the batch mean or biased variance ``s`` of the BatchNorm's
    float64 input, to STATISTICS_LIMIT of the update's scale ``|r| + (1 - m) sqrt(mean x^2)``
    (variance: ``mean x^2``); statistics the original left unchanged (the CIFAR ResNet's input
    BatchNorm) stay unchanged. A wrong learning rate, weight decay, momentum, gradient or
    statistic reads far above 1."""
    before, want = fixture.weights(step), fixture.weights(step + 1)
    explained = original_step_error(fixture, step)
    noise = fixture.config['noise_teacher_forced'][step]
    out = {}
    for name, got in weights64.items():
        layer, _, stat = name.rpartition('.')
        if stat in ('running_mean', 'running_var') and layer in seen:
            start = before[name].astype(np.float64)
            if np.array_equal(want[name], before[name]):
                out[name] = float(np.abs(got - start).max()) / STATISTICS_LIMIT
                continue
            x, _ = seen[layer]
            axes = tuple(i for i in range(x.ndim) if i != 1)
            centred = x - x.mean(axis=axes, keepdims=True)
            value = x.mean(axis=axes) if stat == 'running_mean' else (centred ** 2).mean(axis=axes)
            size = (np.sqrt((x ** 2).mean(axis=axes)) if stat == 'running_mean'
                    else (x ** 2).mean(axis=axes))
            expected = BN_MOMENTUM * start + (1 - BN_MOMENTUM) * value
            scale = float((np.abs(start) + (1 - BN_MOMENTUM) * size).max())
            out[name] = float(np.abs(got - expected).max()) / (STATISTICS_LIMIT * scale)
            continue
        out.update(excess({name: got}, want, noise, explained=explained))
    return out


# ------------------------------------------------------------------------------- yardsticks
def gradient_errors(grads, g64):
    """Per step and tensor: ``max|g - g64|``. For tensors whose exact gradient is zero (conv
    biases feeding a BatchNorm: their float32 values are cancellation noise, whose size varies
    from step to step) the largest over every step of the fixture."""
    errors = [{name: float(np.abs(g[name].astype(np.float64) - exact).max())
               for name, exact in g64[step].items() if name in g}
              for step, g in enumerate(grads)]
    for step, exact64 in enumerate(g64):
        largest = max(float(np.abs(v).max()) for v in exact64.values())
        for name in errors[step]:
            if np.abs(exact64[name]).max() <= ZERO_GRADIENT * largest:
                errors[step][name] = max(e[name] for e in errors)
    return errors


def floor_of(values_by_impl, impl):
    """Per tensor (per step when lists): the smallest value among the algebras other than
    ``impl`` (``None``: all), e.g. their float32 distances to the port's float64 result."""
    others = [values for other, values in values_by_impl.items() if other != impl]
    if isinstance(others[0], list):
        return [floor_of(dict(enumerate(step)), None) for step in zip(*others)]
    return {name: min(values[name] for values in others) for name in others[0]}


def original_step_error(fixture, step):
    """Per tensor: the part of the original's float32 step that its own float32 gradient error
    explains, ``gradient_share * |g32 - g64|`` (elementwise; both from the fixture)."""
    g32, g64 = fixture.grads(step, 32), fixture.grads(step, 64)
    return {name: fixture.gradient_share * np.abs(g32[name].astype(np.float64) - exact)
            for name, exact in g64.items()}


def gradient_ratios(port, original, floor, g64):
    """Per tensor at one step: the port's error ``|g - g64|`` over the larger of the original's
    own float32 error and ``floor`` (the machine's float32 round-off, :func:`floor_of`; None:
    none), at least one float32 spacing of the largest exact value."""
    ratios = {}
    for name, exact in g64.items():
        if name not in port:
            continue
        own = max(original[name], floor[name] if floor else 0.0,
                  float(np.spacing(np.float32(np.abs(exact).max()))))
        ratios[name] = port[name] / own
    return ratios


def deviations(weights, expected):
    """Per tensor: ``max|w - expected|``."""
    return {name: float(np.abs(value - expected[name].astype(np.float64)).max())
            for name, value in weights.items()}


def excess(weights, expected, noise, floor=None, explained=None):
    """Per tensor: ``|port - original|``, less what ``explained`` accounts for (elementwise, e.g.
    :func:`original_step_error`), over ``NOISE_FACTOR * max(noise, spacing(max|w|), floor)``
    (> 1 fails); ``weights`` a network or a dict of arrays, ``floor`` the machine's float32
    round-off (:func:`floor_of`)."""
    if not isinstance(weights, dict):
        weights = weights_of(weights)
    out = {}
    for name, got in weights.items():
        want = expected[name].astype(np.float64)
        tolerance = NOISE_FACTOR * max(noise.get(name, 0.0),
                                       float(np.spacing(np.float32(np.abs(want).max()))),
                                       floor[name] if floor else 0.0)
        gap = np.abs(got - want)
        if explained and name in explained:
            gap = np.maximum(gap - explained[name], 0)
        out[name] = float(gap.max()) / tolerance
    return out


def worst(values):
    name = max(values, key=values.get)
    return name, values[name]
