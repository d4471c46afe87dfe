"""One optimizer step, and a three-step NAG trajectory, are the same whatever the layout: two
devices in one process, two parameter-server workers, two Horovod ranks, and two workers or
ranks with two devices each all follow the single-device run on the same global batch, within
float32 round-off.

Teacher-forced: every layout starts from the weights in one file and cuts the same global batch
of each step into the same contiguous pieces (workers first, then their devices), and each
worker runs the real engine code: ``Cluster.create``, ``Cluster.contexts``,
``Cluster.broadcast_parameters``, the cluster's trainer, ``Engine.update`` and the cluster's
``step_size``. GPU device lists are stood in for by ``cpu:1,cpu:2`` (a GPU list never holds
``cpu(0)``, so code that assumes one fails here as it would on GPUs).

The network is a small AFF-ResNet (MS-CAM fusion) with every BatchNorm in global-stats mode
(its running statistics, random in the file, normalise the batch). With batch statistics each
device's gradient would depend on which samples share its piece of the batch, and the layouts
would rightly differ; in global-stats mode the gradient of the global batch is the sum of the
per-sample gradients, so every correct layout must give the same step. (Gluon has no switch
for BatchNorms built inside fusion blocks, so the mode is set on each layer before the graph is
built.)

Each comparison holds the change of every tensor since the initial weights, ``w_k - w_0``, to
the reference run's change within ``RTOL`` of its largest entry (plus a few float32 spacings of
the weights): summing the gradient over the workers instead of averaging it doubles the first
step, far outside. Within a layout, every worker and every device must hold bit-identical
weights after every step.

Run as a script, this file is the worker of one layout:
``python tests/test_layouts.py --kvstore dist_sync --init W --out DIR`` under
``openaff-launch`` or ``horovodrun``.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import mxnet as mx
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), 'horovodrun')
CLASSES, GLOBAL_BATCH, SIZE, STEPS, SEED = 10, 8, 16, 3, 11
# allowed error of a tensor's change, relative to the reference change; measured, every layout
# lands within 0.1 of the allowance (the errors are the weights' own float32 rounding), while a
# gradient summed over two workers instead of averaged is off by 1.0 (10^4 times RTOL)
RTOL = 1e-4


# ---------------------------------------------------------------- the network and the data
def make_net():
    """A small CIFAR AFF-ResNet (MS-CAM fusion in every block), every BatchNorm in
    global-stats mode (see the module docstring), no input-statistics tracking."""
    from openaff._gluon import all_blocks
    from openaff.models import CIFARAFFResNet
    net = CIFARAFFResNet(askc_type='ASKCFuse', start_layer=1, layers=[1, 1, 1],
                         channels=[8, 8, 16, 32], classes=CLASSES, deep_stem=False,
                         track_input_stats=False)
    for block in all_blocks(net):
        if isinstance(block, mx.gluon.nn.BatchNorm):
            block._kwargs['use_global_stats'] = True
    return net


def write_initial_weights(path):
    """Xavier weights, random gammas, betas and running statistics (so that every BatchNorm
    is a real affine map) in ``path``."""
    net = make_net()
    mx.random.seed(SEED)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    rng = np.random.RandomState(SEED)
    for name, param in net.collect_params().items():
        shape = param.shape
        if name.endswith('running_var'):
            param.set_data(mx.nd.array(rng.uniform(0.5, 2.0, shape)))
        elif name.endswith(('running_mean', 'beta')):
            param.set_data(mx.nd.array(rng.normal(0, 0.2, shape)))
        elif name.endswith('gamma'):
            param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
    net.save_parameters(str(path))


def global_batch(step):
    """The global batch of ``step`` (1-based): images and label-smoothed one-hot targets."""
    rng = np.random.RandomState(SEED * 100 + step)
    images = rng.normal(0, 1, (GLOBAL_BATCH, 3, SIZE, SIZE)).astype('float32')
    labels = rng.randint(0, CLASSES, GLOBAL_BATCH)
    targets = np.full((GLOBAL_BATCH, CLASSES), 0.1 / CLASSES, dtype='float32')
    targets[np.arange(GLOBAL_BATCH), labels] += 0.9
    return images, targets


def recipe():
    from openaff.engine import Recipe
    # constant learning rate (no warm-up, no decay), NAG with momentum and weight decay
    return Recipe(lr=0.1, momentum=0.9, wd=1e-3, lr_mode='step', warmup_epochs=0, seed=SEED)


# ---------------------------------------------------------------- one layout's worker
def run_worker(kvstore, devices, init, out, steps=STEPS):
    """Train ``steps`` steps of one layout's worker from the weights in ``init``; writes
    ``out/rank<R>.npz`` (the first device's weights after every step) and ``rank<R>.json``
    (where it ran, and how far its device copies were apart)."""
    from openaff.engine import Engine, Outputs
    from openaff.engine.devices import parse_devices
    from openaff.engine.distributed import Cluster
    from openaff.engine.reporting import CifarReport
    from openaff.engine.tasks import Classification
    cluster = Cluster.create(kvstore)
    contexts = cluster.contexts([mx.cpu()], parse_devices(devices) if devices else None)
    net = make_net()
    if cluster.rank == 0 or kvstore != 'horovod':
        net.load_parameters(str(init), ctx=contexts)
    else:
        # other Horovod ranks start elsewhere, shapes unknown: rank 0's weights must reach
        # every device through broadcast_parameters (when they are initialised, in the first
        # forward). Parameter-server workers must start alike: their trainer broadcasts rank
        # 0's weights only on its first step, after the first forward pass.
        mx.random.seed(1000 + cluster.rank)
        net.initialize(mx.init.Uniform(0.5), ctx=contexts)
    engine = Engine(net, recipe(), contexts, [], [], Classification(CLASSES), CifarReport(),
                    Outputs('layout', str(out)), cluster=cluster)
    cluster.broadcast_parameters(net)
    net.hybridize(static_alloc=True, static_shape=True)
    share = GLOBAL_BATCH // cluster.size
    rows = slice(cluster.rank * share, (cluster.rank + 1) * share)
    record, copy_gap = {}, 0.0
    for step in range(1, steps + 1):
        images, targets = global_batch(step)
        data = mx.gluon.utils.split_and_load(mx.nd.array(images[rows]), contexts,
                                             even_split=False)
        soft = mx.gluon.utils.split_and_load(mx.nd.array(targets[rows]), contexts,
                                             even_split=False)
        engine.update(data, soft, share)
        mx.nd.waitall()
        for name, param in net._collect_params_with_prefix().items():
            copies = [c.asnumpy() for c in param.list_data()]
            copy_gap = max(copy_gap, *(float(np.abs(c - copies[0]).max()) for c in copies))
            record[f'{step}/{name}'] = copies[0]
    np.savez(out / f'rank{cluster.rank}.npz', **record)
    facts = dict(rank=cluster.rank, size=cluster.size, local_rank=cluster.local_rank,
                 local_size=cluster.local_size, contexts=[str(c) for c in contexts],
                 copy_gap=copy_gap, step_size=cluster.step_size(share))
    (out / f'rank{cluster.rank}.json').write_text(json.dumps(facts))


def main(argv=None):
    parser = argparse.ArgumentParser(description='one worker of tests/test_layouts.py')
    parser.add_argument('--kvstore', required=True)
    parser.add_argument('--devices', default=None)
    parser.add_argument('--init', required=True, type=pathlib.Path)
    parser.add_argument('--out', required=True, type=pathlib.Path)
    parser.add_argument('--steps', type=int, default=STEPS)
    args = parser.parse_args(argv)
    run_worker(args.kvstore, args.devices, args.init, args.out, args.steps)


if __name__ == '__main__':
    sys.path.insert(0, str(REPO))
    main()
    sys.exit(0)


# ---------------------------------------------------------------- the tests
import pytest  # noqa: E402  (the worker above runs without pytest)

try:
    import horovod.mxnet  # noqa: F401
    HOROVOD = True
except ImportError:
    HOROVOD = False
needs_horovod = pytest.mark.skipif(not HOROVOD, reason='horovod not installed '
                                   '(bash tools/install_horovod.sh)')
multiprocess = [pytest.mark.multiprocess, pytest.mark.slow]

ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
for _name in [k for k in ENV if k.startswith(('DMLC_', 'HOROVOD_', 'OPENAFF_LOCAL_'))]:
    del ENV[_name]
LAUNCH = (sys.executable, '-m', 'openaff.cli.launch', '-n', '2', '-s', '1', '--grace', '5', '--')
HOROVOD_RUN = (HOROVODRUN, '-np', '2', '-H', 'localhost:2', '--gloo')

# name: (how the workers start, kvstore, --devices of each worker, number of workers)
LAYOUTS = {
    'two-devices': (None, 'device', 'cpu:1,cpu:2', 1),
    'two-devices-local': (None, 'local', 'cpu:1,cpu:2', 1),
    'dist_sync': (LAUNCH, 'dist_sync', None, 2),
    'dist_sync-two-devices': (LAUNCH, 'dist_sync', 'cpu:1,cpu:2', 2),
    'dist_device_sync-two-devices': (LAUNCH, 'dist_device_sync', 'cpu:1,cpu:2', 2),
    'horovod': (HOROVOD_RUN, 'horovod', None, 2),
    'horovod-two-devices': (HOROVOD_RUN, 'horovod', 'cpu:1,cpu:2', 2),
}


def layout_param(name):
    launcher, kvstore = LAYOUTS[name][:2]
    marks = [] if launcher is None else list(multiprocess)
    if kvstore == 'horovod':
        marks.append(needs_horovod)
    return pytest.param(name, marks=marks, id=name)


ALL_LAYOUTS = [layout_param(name) for name in LAYOUTS]


@pytest.fixture(scope='module')
def init_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('layouts') / 'init.params'
    write_initial_weights(path)
    return path


def load_run(out, ranks):
    weights = [dict(np.load(out / f'rank{r}.npz')) for r in range(ranks)]
    facts = [json.loads((out / f'rank{r}.json').read_text()) for r in range(ranks)]
    return weights, facts


def start_layout(name, init_file, out):
    """Run a layout; returns (weights of every rank, facts of every rank, seconds)."""
    launcher, kvstore, devices, ranks = LAYOUTS[name]
    out.mkdir(parents=True, exist_ok=True)
    tic = time.time()
    if launcher is None:
        run_worker(kvstore, devices, init_file, out)
    else:
        command = [*launcher, sys.executable, str(pathlib.Path(__file__).resolve()),
                   '--kvstore', kvstore, '--init', str(init_file), '--out', str(out)]
        if devices:
            command += ['--devices', devices]
        result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=400,
                                cwd=REPO)
        assert result.returncode == 0, (result.stdout[-3000:] + result.stderr[-3000:])
    return (*load_run(out, ranks), time.time() - tic)


@pytest.fixture(scope='module')
def reference(init_file, tmp_path_factory):
    """The single-device run: the whole global batch on one CPU."""
    out = tmp_path_factory.mktemp('reference')
    run_worker('device', None, init_file, out)
    return load_run(out, 1)[0][0]


_RUNS = {}


@pytest.fixture
def layout_run(request, init_file, tmp_path_factory):
    """Each layout runs once per session; the one-step and the trajectory tests share it."""
    name = request.param
    if name not in _RUNS:
        _RUNS[name] = start_layout(name, init_file, tmp_path_factory.mktemp(name))
    return name, _RUNS[name]


def initial_weights(init_file):
    net = make_net()
    net.load_parameters(str(init_file))
    return {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}


def step_errors(reference, weights, initial, step):
    """Per tensor: (error of the change since the start, allowed error)."""
    errors = {}
    for name, start in initial.items():
        expected = reference[f'{step}/{name}'] - start
        got = weights[f'{step}/{name}'] - start
        allowed = (RTOL * float(np.abs(expected).max())
                   + 4 * step * float(np.spacing(np.float32(np.abs(start).max()))))
        errors[name] = (float(np.abs(got - expected).max()), allowed)
    return errors


def assert_follows(reference, weights, initial, steps, label):
    for step in steps:
        errors = step_errors(reference, weights, initial, step)
        bad = {n: e for n, e in errors.items() if e[0] > e[1]}
        assert not bad, (f'{label}, step {step}: {len(bad)} of {len(errors)} tensors moved '
                         f'differently from the single-device run, e.g. ' + '; '.join(
                             f'{n}: |error| {e:.3g} > {a:.3g}'
                             for n, (e, a) in sorted(bad.items(), key=lambda i: -i[1][0] / max(
                                 i[1][1], 1e-30))[:3]))


def assert_layout_consistent(name, weights, facts):
    """Every rank saw the layout asked for and holds the same weights on every device."""
    _, kvstore, devices, ranks = LAYOUTS[name]
    from openaff.engine.devices import parse_devices
    contexts = [str(c) for c in parse_devices(devices or 'cpu:0')]
    for rank, fact in enumerate(facts):
        assert (fact['rank'], fact['size']) == (rank, ranks)
        assert fact['local_size'] == ranks  # all on this host, as horovodrun / the launcher say
        assert fact['contexts'] == contexts
        assert fact['copy_gap'] == 0.0, f'rank {rank}: its devices hold different weights'
        assert fact['step_size'] == GLOBAL_BATCH, 'the step must divide by the global batch'
    assert sorted(fact['local_rank'] for fact in facts) == list(range(ranks))
    for rank in range(1, ranks):
        for key, value in weights[0].items():
            assert np.array_equal(weights[rank][key], value), f'rank {rank} differs at {key}'


@pytest.mark.parametrize('layout_run', ALL_LAYOUTS, indirect=True)
def test_one_step_equals_the_single_device_step(layout_run, reference, init_file):
    name, (weights, facts, _) = layout_run
    assert_follows(reference, weights[0], initial_weights(init_file), [1], name)
    assert_layout_consistent(name, weights, facts)


@pytest.mark.parametrize('layout_run', ALL_LAYOUTS, indirect=True)
def test_nag_trajectory_follows_the_single_device_run(layout_run, reference, init_file):
    name, (weights, facts, _) = layout_run
    assert_follows(reference, weights[0], initial_weights(init_file), range(1, STEPS + 1), name)


def test_the_reference_is_deterministic_and_moves(reference, init_file, tmp_path):
    """The premise: a second single-device run is bit-identical, and every trained tensor
    moves by far more than the tolerance (so the comparisons above are not vacuous)."""
    run_worker('device', None, init_file, tmp_path)
    again = load_run(tmp_path, 1)[0][0]
    for key, value in reference.items():
        assert np.array_equal(again[key], value), key
    initial = initial_weights(init_file)
    net = make_net()
    trained = {n for n, p in net._collect_params_with_prefix().items() if p.grad_req != 'null'}
    for name in trained:
        assert np.abs(reference[f'1/{name}'] - initial[name]).max() > 1e-6, name


def test_a_summed_gradient_would_fail(reference, init_file):
    """The check itself: a run whose first step is twice the reference step (what summing the
    gradient over two workers instead of averaging it gives) is caught on every tensor."""
    initial = initial_weights(init_file)
    doubled = {key: initial[key.split('/', 1)[1]] + 2 * (value - initial[key.split('/', 1)[1]])
               for key, value in reference.items()}
    errors = step_errors(reference, doubled, initial, 1)
    moved = [n for n, (e, a) in errors.items() if e > 0]
    assert moved and all(errors[n][0] > errors[n][1] for n in moved)


# ---------------------------------------------------------------- the training command
COMMAND = ['--dataset', 'digits', '--askc-type', 'DirectAdd', '--blocks', '1',
           '--channel-times', '1', '-j', '0', '--seed', '3', '--lr', '0.1', '--num-epochs', '1',
           # 12 per device: each worker's validation shard (225 images) then ends in a batch
           # with an image for each device
           '--batch-size', '12', '--devices', 'cpu:1,cpu:2', '--dist-timeout', '120']


@pytest.mark.parametrize('launcher,kvstore', [
    pytest.param(LAUNCH, 'dist_sync', id='dist_sync', marks=multiprocess),
    pytest.param(HOROVOD_RUN, 'horovod', id='horovod', marks=[*multiprocess, needs_horovod])])
def test_train_cifar_with_two_workers_of_two_devices(tmp_path, launcher, kvstore):
    """The command end to end with several devices per worker: broadcast, steps, the
    per-epoch averaging over workers written to every device, evaluation, and the final
    comparison of all workers' parameters."""
    paths = ['--save-dir', str(tmp_path), '--logging-dir', str(tmp_path)]
    result = subprocess.run([*launcher, sys.executable, str(REPO / 'train_cifar.py'), *COMMAND,
                             *paths, '--kvstore', kvstore], env=ENV, capture_output=True,
                            text=True, timeout=400, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert 'Final parameters identical on all 2 workers' in output
    log = next(tmp_path.glob('train_*.log')).read_text()
    assert f'Devices: cpu:1,cpu:2 | precision: float32 | kvstore {kvstore}, worker 0 of 2' in log
    assert log.count('[Epoch 0]') == 1
