"""Training parity with the original code, on the trajectories of ``../shared/compat/training``:
the port, built through its public API from the original's initial weights and fed its exact
batches, computes the original's gradients (in float64, and in float32 against float64) and makes
its optimizer steps (in float64, teacher-forced and free-running in float32), with every fusion
algebra and through the training engine.

The float32 checks allow, besides the original's own float32 error, the float32 round-off of the
machine running them: the smallest distance between another algebra's float32 result and the
port's float64 result (``parity.floor_of``). oneDNN's AVX2 kernels sum in another order than the
AVX-512 ones the fixtures were made with, which moves every algebra alike (docs/development.md,
training parity). The float64 results are held to the original's.
"""
import mxnet as mx
import numpy as np
import parity
import pytest
from conftest import classifier_engine, needs_compat

from openaff import fusion

pytestmark = [pytest.mark.slow]

FIXTURES = needs_compat(parity.fixture_names())
IMPLS = fusion.IMPLEMENTATIONS


def _fixture(name):
    if name is None:
        pytest.skip('no training fixtures')
    return parity.Fixture(name)


def _failures(values, limit, what):
    bad = {name: round(value, 1) for name, value in values.items() if value > limit}
    return [f'{what}: {bad}'] if bad else []


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', FIXTURES)
def test_float64_gradients_are_the_originals(name, impl):
    """Cast to float64 (where every algebra runs its Python formula and no kernel choice
    matters), the port's gradients at every step's weights are the original's float64 gradients
    to 1e-9 of the largest (measured: 5e-14): the network is the original's function."""
    fixture = _fixture(name)
    problems = []
    for step in range(fixture.steps):
        exact = fixture.grads(step, 64)
        got, _ = parity.float64_pass(name, impl, step)
        largest = max(float(np.abs(v).max()) for v in exact.values())
        relative = {key: float(np.abs(got[key] - value).max()) / largest
                    for key, value in exact.items()}
        problems += _failures({k: v / parity.FLOAT64_GRADIENT_LIMIT for k, v in relative.items()},
                              1, f'step {step} (in units of {parity.FLOAT64_GRADIENT_LIMIT})')
    assert not problems, problems


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', FIXTURES)
def test_gradients_match_float64_like_the_original(name, impl):
    """At every step's weights, in float32: ``|g - g64|`` within a few times the larger of the
    original's own float32 error ``|g32 - g64|`` and this machine's float32 round-off (another
    algebra's distance to the port's float64 gradients). Conv biases that feed a BatchNorm have a
    true gradient of zero, so their float32 values are noise whose size changes from step to
    step: they are held to the largest error made on them over the fixture's steps."""
    fixture = _fixture(name)
    g32 = [fixture.grads(k, 32) for k in range(fixture.steps)]
    g64 = [fixture.grads(k, 64) for k in range(fixture.steps)]
    port64 = [parity.float64_pass(name, 'reference', k)[0] for k in range(fixture.steps)]
    original = parity.gradient_errors(g32, g64)
    roundoff = {i: parity.gradient_errors(parity.float32_gradients(name, i), port64)
                for i in IMPLS}
    floor = parity.floor_of(roundoff, impl)
    errors = parity.gradient_errors(parity.float32_gradients(name, impl), g64)
    problems = []
    for step in range(fixture.steps):
        ratios = parity.gradient_ratios(errors[step], original[step], floor[step], g64[step])
        problems += _failures(ratios, parity.GRADIENT_RATIO_LIMIT, f'step {step}')
    assert not problems, problems


@pytest.mark.parametrize('name', FIXTURES)
def test_a_float64_step_is_the_originals(name):
    """From the original's weights and NAG momentum after step k, one step of the port in
    float64 (network, trainer, running statistics) lands on the original's weights after step
    k+1, within ten times its float32 noise plus the float32 error the original's own step
    carries (``parity.step64_excess``)."""
    fixture = _fixture(name)
    problems = []
    for step in range(fixture.steps):
        weights, seen = parity.float64_teacher_forced(name, step)
        problems += _failures(parity.step64_excess(fixture, step, weights, seen), 1,
                              f'step {step + 1}')
    assert not problems, problems


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', FIXTURES)
def test_teacher_forced_steps_match_the_original(name, impl):
    """From the original's weights and NAG momentum after step k, one float32 step lands on its
    weights after step k+1 within ten times the larger of its float32 noise and this machine's
    float32 round-off (another algebra's distance to the port's float64 step), once the part
    that the original's own float32 gradient error explains is set aside."""
    fixture = _fixture(name)
    problems = []
    for step in range(fixture.steps):
        exact, _ = parity.float64_teacher_forced(name, step)
        roundoff = {i: parity.deviations(parity.teacher_forced(name, i)[step], exact)
                    for i in IMPLS}
        problems += _failures(
            parity.excess(parity.teacher_forced(name, impl)[step], fixture.weights(step + 1),
                          fixture.config['noise_teacher_forced'][step],
                          parity.floor_of(roundoff, impl),
                          parity.original_step_error(fixture, step)), 1, f'step {step + 1}')
    assert not problems, problems


@pytest.mark.parametrize('name', FIXTURES)
def test_free_running_trajectory_matches_the_original(name):
    """The port's own steps from the initial weights follow the original's trajectory tensor
    by tensor (default implementation; floor: the other algebras' distance to the port's float64
    trajectory); the first loss, from identical weights, is as close to the float64 loss as the
    original's, or another algebra's here."""
    fixture = _fixture(name)
    impl = IMPLS[0]
    exact, exact_losses = parity.float64_free_running(name)
    trajectories = {i: parity.free_running(name, i) for i in IMPLS}
    first = {i: abs(losses[0] - exact_losses[0]) for i, (_, losses) in trajectories.items()}
    allowed = parity.GRADIENT_RATIO_LIMIT * max(
        abs(fixture.config['losses'][0] - exact_losses[0]),
        min(value for i, value in first.items() if i != impl),
        float(np.spacing(np.float32(exact_losses[0]))))
    assert first[impl] <= allowed, (trajectories[impl][1][0], fixture.config['losses'][0],
                                     exact_losses[0])
    problems = []
    for step in range(fixture.steps):
        roundoff = {i: parity.deviations(weights[step], exact[step])
                    for i, (weights, _) in trajectories.items()}
        problems += _failures(parity.excess(trajectories[impl][0][step], fixture.weights(step + 1),
                                            fixture.config['noise_free_running'][step],
                                            parity.floor_of(roundoff, impl)),
                              1, f'step {step + 1}')
    assert not problems, problems


@pytest.mark.parametrize('name', FIXTURES)
def test_the_engine_steps_like_the_original(name, tmp_path):
    """:meth:`openaff.engine.Engine.update`, the step of ``train_cifar.py``, with the
    engine's own trainer, scheduler, loss and graph options (static allocation); floor: the
    smallest distance of the three algebras' plain float32 trajectories to the float64 one,
    which share none of the engine's code."""
    from openaff.engine import Recipe
    fixture = _fixture(name)
    spec = fixture.config['trainer']['optimizer_params']
    recipe = Recipe(num_epochs=1, lr=spec['learning_rate'], momentum=spec['momentum'],
                    wd=spec['wd'], optimizer=fixture.config['trainer']['optimizer'])
    net = fixture.build()
    net.hybridize(static_alloc=True, static_shape=True)
    batches = list(range(fixture.steps))
    engine = classifier_engine(net, recipe, [mx.cpu()], batches, [], 10, 'parity', str(tmp_path))
    exact, _ = parity.float64_free_running(name)
    trajectories = {i: parity.free_running(name, i)[0] for i in IMPLS}
    problems = []
    for step in range(fixture.steps):
        x, target = fixture.batch(step)
        if fixture.sparse:  # the engine's loss takes soft targets
            target = target.one_hot(10)
        engine.update([x], [target], fixture.step_batch_size)
        mx.nd.waitall()
        roundoff = {i: parity.deviations(weights[step], exact[step])
                    for i, weights in trajectories.items()}
        problems += _failures(parity.excess(net, fixture.weights(step + 1),
                                            fixture.config['noise_free_running'][step],
                                            parity.floor_of(roundoff, None)),
                              1, f'step {step + 1}')
    assert not problems, problems


def test_a_wrong_learning_rate_is_caught():
    """The comparisons are sensitive: a learning rate 0.1 % off fails the float64 step and the
    float32 teacher-forced step (with this machine's round-off floor)."""
    names = parity.fixture_names()
    if not names:
        pytest.skip('no training fixtures')
    fixture = parity.Fixture(names[0])
    weights, seen = parity.float64_step(fixture, 1, lr_factor=1.001)
    worst64 = parity.worst(parity.step64_excess(fixture, 1, weights, seen))
    impl = IMPLS[0]
    with fusion.implementation(impl):
        net = fixture.build()
        parity.load_weights(net, fixture.weights(1))
        trainer = fixture.trainer(net, lr_factor=1.001)
        parity.set_momentum(trainer, net, fixture.momentum(1))
        parity.train_step(net, trainer, fixture, 1)
    exact, _ = parity.float64_teacher_forced(fixture.name, 1)
    roundoff = {i: parity.deviations(parity.teacher_forced(fixture.name, i)[1], exact)
                for i in IMPLS}
    worst32 = parity.worst(parity.excess(net, fixture.weights(2),
                                         fixture.config['noise_teacher_forced'][1],
                                         parity.floor_of(roundoff, impl),
                                         parity.original_step_error(fixture, 1)))
    assert worst64[1] > 1 and np.isfinite(worst64[1]), worst64
    assert worst32[1] > 1 and np.isfinite(worst32[1]), worst32
