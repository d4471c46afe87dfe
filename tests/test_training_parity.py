"""Training parity with the original code, on the trajectories of ``../shared/compat/training``:
the port, built through its public API from the original's initial weights and fed its exact
batches, computes the original's gradients (against float64) and makes its optimizer steps
(teacher-forced and free-running), with every fusion algebra and through the training engine.
"""
import numpy as np
import pytest

import mxnet as mx
from mxnet import gluon

import parity
from conftest import needs_compat
from openaff import fusion

pytestmark = [pytest.mark.slow]

FIXTURES = needs_compat(parity.fixture_names())


def _fixture(name):
    if name is None:
        pytest.skip('no training fixtures')
    return parity.Fixture(name)


def _failures(values, limit, what):
    bad = {name: round(value, 1) for name, value in values.items() if value > limit}
    return [f'{what}: {bad}'] if bad else []


@pytest.mark.parametrize('impl', fusion.IMPLEMENTATIONS)
@pytest.mark.parametrize('name', FIXTURES)
def test_gradients_match_float64_like_the_original(name, impl):
    """At every step's weights: ``|g - g64|`` within a few times the original's own float32
    error ``|g32 - g64|``. Conv biases that feed a BatchNorm have a true gradient of zero, so
    their float32 values are noise whose size changes from step to step: they are held to the
    largest error the original made on them over the fixture's steps."""
    fixture = _fixture(name)
    g32 = [fixture.grads(k, 32) for k in range(fixture.steps)]
    g64 = [fixture.grads(k, 64) for k in range(fixture.steps)]
    with fusion.implementation(impl):
        net = fixture.build()
        problems = []
        for step in range(fixture.steps):
            parity.load_weights(net, fixture.weights(step))
            got = parity.gradients(net, fixture, step)
            ratios = parity.gradient_ratios(got, g32[step], g64[step], g32, g64)
            problems += _failures(ratios, parity.GRADIENT_RATIO_LIMIT, f'step {step}')
    assert not problems, problems


@pytest.mark.parametrize('impl', fusion.IMPLEMENTATIONS)
@pytest.mark.parametrize('name', FIXTURES)
def test_teacher_forced_steps_match_the_original(name, impl):
    """From the original's weights and NAG momentum after step k, one step lands within ten
    times the original's own float32 noise of its weights after step k+1."""
    fixture = _fixture(name)
    problems = []
    with fusion.implementation(impl):
        for step in range(fixture.steps):
            net = fixture.build()
            parity.load_weights(net, fixture.weights(step))
            trainer = fixture.trainer(net)
            parity.set_momentum(trainer, net, fixture.momentum(step))
            parity.train_step(net, trainer, fixture, step)
            problems += _failures(
                parity.excess(net, fixture.weights(step + 1),
                              fixture.config['noise_teacher_forced'][step]), 1, f'step {step + 1}')
    assert not problems, problems


@pytest.mark.parametrize('name', FIXTURES)
def test_free_running_trajectory_matches_the_original(name):
    """The port's own steps from the initial weights follow the original's trajectory tensor
    by tensor (default implementation); the first loss, from identical weights, is the
    original's to float32 round-off (later ones drift as the fixtures' noise fields say)."""
    fixture = _fixture(name)
    net = fixture.build()
    trainer = fixture.trainer(net)
    problems = []
    for step in range(fixture.steps):
        loss = parity.train_step(net, trainer, fixture, step)
        if step == 0:
            assert loss == pytest.approx(fixture.config['losses'][0], rel=1e-6)
        problems += _failures(parity.excess(net, fixture.weights(step + 1),
                                            fixture.config['noise_free_running'][step]),
                              1, f'step {step + 1}')
    assert not problems, problems


@pytest.mark.parametrize('name', FIXTURES)
def test_the_engine_steps_like_the_original(name, tmp_path):
    """:meth:`openaff.engine.Engine.update`, the step of ``train_cifar.py``, with the
    engine's own trainer, scheduler, loss and graph options (static allocation)."""
    from openaff.engine import Engine, Recipe
    fixture = _fixture(name)
    spec = fixture.config['trainer']['optimizer_params']
    recipe = Recipe(num_epochs=1, lr=spec['learning_rate'], momentum=spec['momentum'],
                    wd=spec['wd'], optimizer=fixture.config['trainer']['optimizer'])
    net = fixture.build()
    net.hybridize(static_alloc=True, static_shape=True)
    batches = list(range(fixture.steps))
    engine = Engine(net, recipe, [mx.cpu()], batches, [], 10, 'parity', str(tmp_path))
    problems = []
    for step in range(fixture.steps):
        x, target = fixture.batch(step)
        if fixture.sparse:  # the engine's loss takes soft targets
            target = target.one_hot(10)
        engine.update([x], [target], fixture.step_batch_size)
        mx.nd.waitall()
        problems += _failures(parity.excess(net, fixture.weights(step + 1),
                                            fixture.config['noise_free_running'][step]),
                              1, f'step {step + 1}')
    assert not problems, problems


def test_a_wrong_learning_rate_is_caught():
    """The comparison is sensitive: a learning rate 0.1 % off fails the teacher-forced check."""
    names = parity.fixture_names()
    if not names:
        pytest.skip('no training fixtures')
    fixture = parity.Fixture(names[0])
    net = fixture.build()
    parity.load_weights(net, fixture.weights(1))
    spec = dict(fixture.config['trainer']['optimizer_params'])
    spec['learning_rate'] *= 1.001
    trainer = gluon.Trainer(net.collect_params(), 'nag', spec)
    parity.set_momentum(trainer, net, fixture.momentum(1))
    parity.train_step(net, trainer, fixture, 1)
    worst = parity.worst(parity.excess(net, fixture.weights(2),
                                       fixture.config['noise_teacher_forced'][1]))
    assert worst[1] > 1, worst
    assert np.isfinite(worst[1])
