"""Training parity with the original code: the trajectories of ``../shared/compat/training``
(initial weights, exact batches, weights and NAG momentum after every step, float64 gradients)
replayed through the port's public API.

Tolerances follow the fixtures' README: a tensor after a step agrees when
``|port - original| <= 10 * max(noise, spacing(max|w|))`` with the original's own float32 noise
for that step; a float32 gradient ``g`` is as good as the original's when ``|g - g64|`` is of the
order of ``|g32 - g64|``.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from conftest import COMPAT

TRAINING = COMPAT / 'training'
NOISE_FACTOR = 10
# |g - g64| / |g32 - g64|: 1-5 is float32 round-off (README); a wrong gradient reads tens
GRADIENT_RATIO_LIMIT = 8.0
# an exact gradient this small next to the network's largest is zero up to float64 round-off
ZERO_GRADIENT = 1e-9


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

    def batch(self, step):
        """Inputs and loss targets of step ``step`` (0-based)."""
        return mx.nd.array(self.x[step]), mx.nd.array(self.target[step])

    def trainer(self, net):
        spec = self.config['trainer']
        return gluon.Trainer(net.collect_params(), spec['optimizer'],
                             dict(spec['optimizer_params']))

    @property
    def step_batch_size(self):
        return self.config['trainer']['step_batch_size']


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
                updater.states[i] = momentum[name].copyto(param.list_ctx()[0])
                updater.states_synced[i] = True


def gradients(net, fixture, step):
    """The port's float32 gradients of the batch's summed loss at the current weights."""
    x, target = fixture.batch(step)
    loss_fn = fixture.loss_fn()
    with autograd.record():
        loss = loss_fn(net(x), target)
    loss.backward()
    mx.nd.waitall()
    return {name: param.grad().asnumpy() for name, param in net._collect_params_with_prefix().items()
            if param.grad_req != 'null'}


def gradient_ratios(port, g32, g64, all_g32, all_g64):
    """Per tensor: ``max|port - g64|`` over the original's own float32 error ``max|g32 - g64|``
    at this step. For tensors whose exact gradient is zero (conv biases feeding a BatchNorm:
    their float32 values are cancellation noise, whose size varies from step to step) the error
    is taken over every step of the fixture (``all_g32``, ``all_g64``)."""
    largest = max(float(np.abs(v).max()) for v in g64.values())
    ratios = {}
    for name, exact in g64.items():
        if name not in port:
            continue
        if np.abs(exact).max() <= ZERO_GRADIENT * largest:
            own = max(float(np.abs(a[name] - b[name]).max()) for a, b in zip(all_g32, all_g64))
        else:
            own = float(np.abs(g32[name].astype(np.float64) - exact).max())
        own = max(own, float(np.spacing(np.float32(np.abs(exact).max()))))
        ratios[name] = float(np.abs(port[name].astype(np.float64) - exact).max()) / own
    return ratios


def train_step(net, trainer, fixture, step):
    x, target = fixture.batch(step)
    loss_fn = fixture.loss_fn()
    with autograd.record():
        loss = loss_fn(net(x), target)
    loss.backward()
    mx.nd.waitall()  # without it mxnet 1.9.1 on CPU is not reproducible (fixtures' README)
    trainer.step(fixture.step_batch_size)
    mx.nd.waitall()
    return float(loss.mean().asscalar())


def excess(net, expected, noise):
    """Per tensor: ``|port - original|`` over the tolerance (> 1 fails)."""
    out = {}
    for name, param in net._collect_params_with_prefix().items():
        want = expected[name].astype(np.float64)
        got = param.data().asnumpy().astype(np.float64)
        tolerance = NOISE_FACTOR * max(noise.get(name, 0.0),
                                       float(np.spacing(np.float32(np.abs(want).max()))))
        out[name] = float(np.abs(got - want).max()) / tolerance
    return out


def worst(values):
    name = max(values, key=values.get)
    return name, values[name]
