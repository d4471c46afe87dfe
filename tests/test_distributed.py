"""Scale-out: the Cluster (kvstore, Horovod), the watchdog, SyncBatchNorm, AMP and float16,
and real multi-process runs of train_cifar.py on localhost (parameter server via
``openaff-launch``, Horovod via ``horovodrun --gloo``), including a killed worker."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from conftest import REPO, classifier_engine
from mxnet import autograd, gluon

from openaff.batchnorm import use_sync_batchnorm
from openaff.engine import Recipe
from openaff.engine.devices import cpu_runs_bfloat16
from openaff.engine.distributed import Cluster, DistributedError, Watchdog, import_horovod
from openaff.models import CIFARAFFResNet

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

try:
    import horovod.mxnet  # noqa: F401  (built against mxnet: .ci/run installs it)
    HOROVOD = True
except ImportError:
    HOROVOD = False
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), 'horovodrun')
needs_horovod = pytest.mark.skipif(not HOROVOD, reason='horovod not installed '
                                   '(bash tools/install_horovod.sh)')

ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1')
for name in [k for k in ENV if k.startswith(('DMLC_', 'HOROVOD_'))]:
    del ENV[name]


def tiny_net(**kwargs):
    return CIFARAFFResNet(askc_type='ASKCFuse', start_layer=1, layers=[1, 1, 1],
                          channels=[8, 8, 16, 32], classes=10, deep_stem=False, **kwargs)


# ---------------------------------------------------------------- in one process
def test_single_process_cluster_is_the_identity():
    cluster = Cluster.create('device')
    assert not cluster.distributed and cluster.is_chief and cluster.size == 1
    assert cluster.step_size(64) == 64
    np.testing.assert_array_equal(cluster.allreduce([1.0, 2.0], 'x'), [1.0, 2.0])
    assert cluster.broadcast_int(12345) == 12345
    assert cluster.contexts([mx.cpu()]) == [mx.cpu()]


def test_unknown_kvstore_and_missing_launcher_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match='horovod'):
        Cluster.create('dist')
    monkeypatch.delenv('DMLC_ROLE', raising=False)
    with pytest.raises(DistributedError, match='openaff-launch'):
        Cluster.create('dist_sync')


def test_missing_horovod_says_how_to_build_it(monkeypatch):
    monkeypatch.setitem(sys.modules, 'horovod', None)
    monkeypatch.setitem(sys.modules, 'horovod.mxnet', None)
    with pytest.raises(DistributedError, match='HOROVOD_WITH_MXNET=1'):
        import_horovod()


def test_scripts_turn_distributed_set_up_errors_into_one_line(monkeypatch, capsys):
    from openaff.cli import train_cifar as cifar
    monkeypatch.setitem(sys.modules, 'horovod', None)
    monkeypatch.setitem(sys.modules, 'horovod.mxnet', None)
    assert cifar.main(['--dataset', 'digits', '--kvstore', 'horovod']) == 2
    assert 'error: --kvstore horovod needs Horovod' in capsys.readouterr().err
    monkeypatch.delenv('DMLC_ROLE', raising=False)
    assert cifar.main(['--dataset', 'digits', '--kvstore', 'dist_sync']) == 2
    assert 'openaff-launch' in capsys.readouterr().err


def test_watchdog_ends_a_stalled_process():
    code = ('import time, logging\n'
            'from openaff.engine.distributed import Watchdog\n'
            'with Watchdog(1.0, "test worker") as dog:\n'
            '    dog.beat(); time.sleep(30)\n')
    tic = time.time()
    result = subprocess.run([sys.executable, '-c', code], env=ENV, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == Watchdog.EXIT_CODE
    assert 'no training progress' in result.stderr and 'test worker' in result.stderr
    assert time.time() - tic < 25


def test_watchdog_leaves_a_beating_process_alone():
    with Watchdog(0.5) as dog:
        for _ in range(8):
            time.sleep(0.15)
            dog.beat()
    assert dog._stop.is_set()


def test_sync_batchnorm_keeps_names_and_matches_batchnorm_on_one_device(tmp_path):
    x = mx.nd.random.normal(shape=(4, 3, 16, 16))
    plain = tiny_net()
    plain.initialize(mx.init.Xavier())
    plain(x)
    plain.save_parameters(str(tmp_path / 'plain.params'))
    synced = tiny_net()
    names = list(synced._collect_params_with_prefix())
    changed = use_sync_batchnorm(synced, 1)
    assert changed == sum(isinstance(b, gluon.nn.BatchNorm) for b in _blocks(plain)) > 10
    assert list(synced._collect_params_with_prefix()) == names
    assert all(isinstance(b, gluon.contrib.nn.SyncBatchNorm)
               for b in _blocks(synced) if isinstance(b, gluon.nn.BatchNorm))
    synced.load_parameters(str(tmp_path / 'plain.params'))  # strict: every name matches
    synced.hybridize()
    with autograd.record():
        expected, got = plain(x), synced(x)
    np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=1e-4, atol=1e-5)
    assert use_sync_batchnorm(synced, 1) == 0  # already converted


def _blocks(net):
    from openaff._gluon import all_blocks
    return all_blocks(net)


def test_syncbn_refuses_cpu_contexts():
    from openaff.cli.runtime import apply_syncbn
    with pytest.raises(ValueError, match='GPUs'):
        apply_syncbn(tiny_net(), True, [mx.cpu(0), mx.cpu(1)])


class _Scale(gluon.Block):
    def __init__(self):
        super().__init__()
        self.scale = self.params.get('scale', shape=(1, 4))


def test_float16_recipe_keeps_float32_master_weights(tmp_path):
    """The CPU-checkable half of float16 training: the trainer gets multi_precision, keeps a
    float32 copy of each float16 weight, and steps the weights (mxnet has no float16 GEMM on
    the CPU, so the net here is one element-wise parameter)."""
    net = _Scale()
    net.initialize(mx.init.One())
    net.cast('float16')
    engine = classifier_engine(net, Recipe(dtype='float16', lr=0.5), [mx.cpu()], [], [], 4,
                               'fp16', str(tmp_path))
    assert engine.trainer._optimizer.multi_precision
    with autograd.record():
        loss = (net.scale.data() * mx.nd.ones((1, 4), dtype='float16')).astype('float32').sum()
    loss.backward()
    engine.trainer.step(1)
    master = next(iter(engine.trainer._updaters[0].states.values()))[0]
    assert net.scale.data().dtype == np.float16 and master.dtype == np.float32
    assert np.all(net.scale.data().asnumpy() < 1.0)


def run_script(args, timeout=600, launcher=()):
    return subprocess.run([*launcher, sys.executable, str(REPO / 'train_cifar.py'), *args],
                          env=ENV, capture_output=True, text=True, timeout=timeout, cwd=REPO)


DIGITS = ['--dataset', 'digits', '--askc-type', 'DirectAdd', '--blocks', '1',
          '--channel-times', '1', '-j', '0', '--seed', '3', '--lr', '0.1', '--precise-bn', '4']


def run_args(path, epochs=3):
    return ['--num-epochs', str(epochs), '--save-dir', str(path), '--logging-dir', str(path),
            '--save-plot-dir', str(path)]


def final_accuracy(path):
    pointer = next(path.glob('*-checkpoint.json'))
    return json.loads(pointer.read_text())['metrics']['val_acc']


@pytest.mark.skipif(not cpu_runs_bfloat16(), reason='this CPU has no AVX-512: oneDNN runs no '
                    'bfloat16 convolution here')
def test_amp_trains_in_bfloat16_on_the_cpu(tmp_path):
    result = run_script([*DIGITS, *run_args(tmp_path, 1), '--amp', '--batch-size', '64'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'AMP: bfloat16' in result.stderr
    weights = mx.nd.load(str(next(tmp_path.glob('*-final.params'))))
    assert {w.dtype for w in weights.values()} == {np.float32}  # master weights stay fp32


def test_float16_on_the_cpu_falls_back_with_a_note(tmp_path):
    result = run_script([*DIGITS, *run_args(tmp_path, 1), '--dtype', 'float16',
                         '--batch-size', '64'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'needs a GPU' in result.stderr and 'training in float32' in result.stderr


# ---------------------------------------------------------------- real processes
@pytest.fixture(scope='module')
def single_process_run(tmp_path_factory):
    """The reference: one process with the global batch of the 2-worker runs."""
    path = tmp_path_factory.mktemp('single')
    result = run_script([*DIGITS, *run_args(path), '--batch-size', '64'])
    assert result.returncode == 0, result.stderr[-3000:]
    return final_accuracy(path)


def assert_one_chief_output(path, stderr, workers=2):
    """Rank 0 alone wrote the log, checkpoints and plot, and said the workers agree."""
    assert f'Final parameters identical on all {workers} workers' in stderr
    logs = list(path.glob('train_*.log'))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert text.count('[Epoch 2]') == 1 and 'worker 0 of 2' in text
    assert len(list(path.glob('*-final.params'))) == 1
    assert len(list(path.glob('*_history.png'))) == 1


def test_dist_sync_two_workers_one_server(tmp_path, single_process_run):
    result = run_script([*DIGITS, *run_args(tmp_path), '--batch-size', '32',
                         '--kvstore', 'dist_sync', '--dist-timeout', '120'],
                        launcher=(sys.executable, '-m', 'openaff.cli.launch', '-n', '2', '-s', '1',
                                  '--'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_one_chief_output(tmp_path, result.stderr)
    # same global batch (2 x 32) as the single process; digits' 450 validation images make
    # one image 0.0022, and three epochs leave run-to-run noise of a few per cent
    assert abs(final_accuracy(tmp_path) - single_process_run) < 0.1


@needs_horovod
def test_horovod_two_ranks(tmp_path, single_process_run):
    result = run_script([*DIGITS, *run_args(tmp_path), '--batch-size', '32',
                         '--kvstore', 'horovod', '--dist-timeout', '120'],
                        launcher=(HOROVODRUN, '-np', '2', '-H', 'localhost:2', '--gloo'))
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert_one_chief_output(tmp_path, output)
    assert abs(final_accuracy(tmp_path) - single_process_run) < 0.1


def test_dist_async_runs_and_says_workers_differ(tmp_path):
    result = run_script([*DIGITS, *run_args(tmp_path, 1), '--batch-size', '32',
                         '--kvstore', 'dist_async'],
                        launcher=(sys.executable, '-m', 'openaff.cli.launch', '-n', '2', '-s', '1',
                                  '--'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'dist_async does not keep workers identical' in result.stderr
    assert 0.0 <= final_accuracy(tmp_path) <= 1.0


def wait_for_epoch_line(path, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        logs = list(path.glob('train_*.log'))
        if logs and '[Epoch 0]' in logs[0].read_text():
            return
        time.sleep(0.2)
    raise TimeoutError('the run never finished its first epoch')


def worker_pids(save_dir):
    """The training processes of a run (not its launcher or shell wrappers)."""
    pids = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as handle:
                argv = handle.read().decode(errors='replace').split('\0')
        except (OSError, ValueError):
            continue
        if (len(argv) > 1 and argv[1].endswith('train_cifar.py') and str(save_dir) in argv
                and 'python' in os.path.basename(argv[0])):
            pids.append(int(entry))
    return sorted(pids)


def kill_one_worker_and_wait(tmp_path, launcher, kvstore, extra=()):
    """Start a long 2-worker run, SIGKILL one worker after epoch 0; return (seconds until
    everything exited, the launcher's return code, its output)."""
    cmd = [*launcher, sys.executable, str(REPO / 'train_cifar.py'), *DIGITS,
           *run_args(tmp_path, 50), '--batch-size', '32', '--kvstore', kvstore, *extra]
    process = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=REPO, start_new_session=True)
    try:
        wait_for_epoch_line(tmp_path)
        pids = worker_pids(tmp_path)
        assert len(pids) == 2, pids
        os.kill(pids[-1], signal.SIGKILL)
        tic = time.time()
        output, _ = process.communicate(timeout=240)
        return time.time() - tic, process.returncode, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_killed_worker_stops_a_launched_dist_sync_job(tmp_path):
    seconds, code, output = kill_one_worker_and_wait(
        tmp_path, (sys.executable, '-m', 'openaff.cli.launch', '-n', '2', '-s', '1', '--grace',
                   '5', '--'), 'dist_sync')
    assert code != 0
    assert re.search(r'openaff-launch: error: worker \d .*SIGKILL', output), output[-2000:]
    assert seconds < 60
    assert not worker_pids(tmp_path)


def test_watchdog_stops_survivors_without_a_supervising_launcher(tmp_path):
    """Workers started by hand (as a cluster scheduler would): the survivor waits in a
    kvstore call for the dead peer, and its watchdog ends it with a clear error."""
    from openaff.apps.launch import build_processes
    cmd = [sys.executable, str(REPO / 'train_cifar.py'), *DIGITS, *run_args(tmp_path, 50),
           '--batch-size', '32', '--kvstore', 'dist_sync', '--dist-timeout', '15']
    processes = []
    for spec in build_processes(cmd, 2, 1):
        processes.append((spec.role, subprocess.Popen(
            spec.argv(), env=dict(ENV, **spec.env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True)))
    workers = [p for role, p in processes if role == 'worker']
    try:
        wait_for_epoch_line(tmp_path)
        workers[1].kill()
        tic = time.time()
        output, _ = workers[0].communicate(timeout=120)
        assert time.time() - tic < 15 + 45
        assert workers[0].returncode == Watchdog.EXIT_CODE, output[-2000:]
        assert 'no training progress' in output
    finally:
        for _, process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


@needs_horovod
def test_killed_rank_stops_a_horovod_job(tmp_path):
    seconds, code, output = kill_one_worker_and_wait(
        tmp_path, (HOROVODRUN, '-np', '2', '-H', 'localhost:2', '--gloo'), 'horovod')
    assert code != 0
    assert 'exited with non-zero status' in output, output[-2000:]
    assert seconds < 60
    assert not worker_pids(tmp_path)
