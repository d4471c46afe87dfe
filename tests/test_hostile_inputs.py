"""Bad input to every command, each case in its own process: the exit status, one line of
error naming what is wrong, no traceback, no signal; where a run's files exist already, they
are left intact."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from conftest import (
    COMMAND_ENV,
    REPO,
    assert_one_line_error,
    run_command,
    run_dir_args,
    write_tiny_cifar,
)

pytestmark = [pytest.mark.multiprocess]

TINY = ['--blocks', '1', '--channel-times', '1', '-j', '0', '--seed', '0', '--batch-size', '16']
MODEL = 'cifar10-ASKCFuse-resnet-8-c-1-s-1'
ENV = COMMAND_ENV


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Tiny CIFAR-10 data, a finished one-epoch run, and broken files of every kind."""
    root = tmp_path_factory.mktemp('hostile')
    data = write_tiny_cifar(root / 'data', 'cifar10', 'binary')
    run = root / 'run'
    assert run_command('train_cifar.py', *train(data, run)).returncode == 0
    broken = root / 'broken'
    broken.mkdir()
    (broken / 'not-a-dir').write_text('a file where a folder is expected')
    # a CIFAR-10 python release whose first batch is not a pickle
    bad_pickle = broken / 'cifar-10-batches-py'
    bad_pickle.mkdir()
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta']:
        (bad_pickle / name).write_bytes(b'\x80\x04not a pickle')
    # labels beyond CIFAR-10's ten classes
    wide = write_tiny_cifar(root / 'wide', 'cifar100', 'python')
    os.rename(wide / 'cifar-100-python', wide / 'cifar-10-batches-py')
    _relabel_as_cifar10(wide / 'cifar-10-batches-py')
    # a run whose checkpoint record was cut off
    truncated = root / 'truncated'
    truncated.mkdir()
    pointer = next(run.glob('*-checkpoint.json'))
    (truncated / pointer.name).write_text(pointer.read_text()[:40])
    # weights: NaN, integer
    final = next(run.glob('*-final.params'))
    weights = mx.nd.load(str(final))
    nan = dict(weights)
    first = sorted(nan)[0]
    nan[first] = nan[first] * float('nan')
    nan_dir = root / 'nan'
    _copy_run(run, nan_dir, {final.name: nan})
    ints = {k: v.astype('int32') for k, v in weights.items()}
    int_dir = root / 'int'
    _copy_run(run, int_dir, {final.name: ints})
    (broken / 'garbage.params').write_bytes(b'\x00' * 64)
    # a record file that is not one
    (broken / 'bad.rec').write_bytes(os.urandom(4096))
    (broken / 'bad.idx').write_text('0\t0\n1\t1024\n')
    log = root / 'orig.log'
    log.write_text('no epochs here\n')
    return dict(root=root, data=data, run=run, broken=broken, truncated=truncated,
                nan=nan_dir / final.name, ints=int_dir / final.name, final=final, wide=wide)


def _relabel_as_cifar10(folder):
    """A CIFAR-100 python release renamed as CIFAR-10: its fine labels reach 99."""
    for name, split in (('train', 'data_batch_1'), ('test', 'test_batch')):
        with open(folder / name, 'rb') as handle:
            batch = pickle.load(handle, encoding='bytes')
        batch = {b'data': batch[b'data'], b'labels': list(batch[b'fine_labels'])}
        with open(folder / split, 'wb') as handle:
            pickle.dump(batch, handle)
    for i in range(2, 6):
        with open(folder / f'data_batch_{i}', 'wb') as handle:
            pickle.dump({b'data': np.zeros((0, 3072), np.uint8), b'labels': []}, handle)
    with open(folder / 'batches.meta', 'wb') as handle:
        pickle.dump({b'label_names': [str(i).encode() for i in range(10)]}, handle)


def _copy_run(run, target, replace):
    target.mkdir()
    for path in run.iterdir():
        if path.name in replace:
            mx.nd.save(str(target / path.name), replace[path.name])
        elif path.is_file():
            (target / path.name).write_bytes(path.read_bytes())


def train(data, out, *extra):
    return ['--dataset', 'cifar10', '--data-dir', str(data), '--num-epochs', '1', *TINY,
            *run_dir_args(out), *extra]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# (id, command, arguments given the world, fragment of the error line)
TRAINING_CASES = [
    ('batch size 0', lambda w, out: train(w['data'], out, '--batch-size', '0'),
     '--batch-size'),
    ('zero epochs', lambda w, out: train(w['data'], out, '--num-epochs', '0'),
     '--num-epochs'),
    ('non-numeric decay epochs', lambda w, out: train(w['data'], out, '--lr-decay-epoch',
                                                 '10,abc'), '--lr-decay-epoch'),
    ('channel times 0', lambda w, out: train(w['data'], out, '--channel-times', '0'),
     '--channel-times'),
    ('blocks 0', lambda w, out: train(w['data'], out, '--blocks', '0'), '--blocks'),
    ('start layer beyond the stages', lambda w, out: train(w['data'], out,
                                                      '--start-layer', '10'), '--start-layer'),
    ('integer dtype', lambda w, out: train(w['data'], out, '--dtype', 'int8'), '--dtype'),
    ('lr nan', lambda w, out: train(w['data'], out, '--lr', 'nan'), '--lr'),
    ('negative precise BN', lambda w, out: train(w['data'], out, '--precise-bn', '-5'),
     '--precise-bn'),
    ('unknown fusion', lambda w, out: train(w['data'], out, '--askc-type', 'Nope'),
     'Nope'),
    ('plot dir under a file', lambda w, out: train(w['data'], out) +
     ['--save-plot-dir', str(w['broken'] / 'not-a-dir' / 'plots')], '--save-plot-dir'),
    ('save dir under a file', lambda w, out: train(w['data'], w['broken'] / 'not-a-dir' / 'run'),
     '--save-dir'),
    ('missing compare log', lambda w, out: train(w['data'], out, '--compare-log',
                                            str(w['root'] / 'no.log')), '--compare-log'),
    ('corrupt CIFAR pickle', lambda w, out: train(w['broken'], out),
     'is not a CIFAR python batch'),
    ('labels beyond the classes', lambda w, out: train(w['wide'], out), 'label'),
    ('truncated checkpoint record', lambda w, out: train(w['data'], w['truncated'], '--resume-from',
                                                    'latest'), 'checkpoint'),
    ('resume with another lr', lambda w, out: train(w['data'], w['run'], '--resume-from', 'latest',
                                               '--lr', '0.01'), 'lr'),
    ('a run is there already', lambda w, out: train(w['data'], w['run']), '--resume-from'),
    ('resume from a missing file', lambda w, out: train(w['data'], out, '--resume-from',
                                                        str(w['root'] / 'gone.params')),
     'does not exist'),
    ('negative data workers', lambda w, out: train(w['data'], out, '-j', '-1'),
     '--num-data-workers'),
]


@pytest.mark.parametrize('case, argv, fragment', TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_training_refuses_bad_input_up_front(world, tmp_path, case, argv, fragment):
    before = snapshot(world['run'])
    out = tmp_path / 'out'
    done = run_command('train_cifar.py', *argv(world, out))
    assert_one_line_error(done, fragment)
    assert snapshot(world['run']) == before, 'the earlier run was changed'
    assert not list(out.glob('*')), 'work started before the error'  # no checkpoint, no log


IMAGENET_CASES = [
    ('unknown teacher', ['--synthetic', '--num-gpus', '0', '--teacher', 'no_such_net',
                         '--hard-weight', '0.5'], '--teacher'),
    ('corrupt record file', None, '.rec'),
    ('layers not offered', ['--synthetic', '--num-layer', '18'], '--num-layer'),
    ('start layer beyond the stages', ['--synthetic', '--start-layer', '5'], '--start-layer'),
    ('missing resume states', ['--synthetic', '--num-gpus', '0', '--resume-states', 'no.states'],
     '--resume-states'),
]


@pytest.mark.parametrize('case, argv, fragment', IMAGENET_CASES, ids=[c[0] for c in IMAGENET_CASES])
def test_imagenet_training_refuses_bad_input(world, tmp_path, case, argv, fragment):
    if argv is None:
        bad = world['broken']
        argv = ['--use-rec', '--rec-train', bad / 'bad.rec', '--rec-train-idx', bad / 'bad.idx',
                '--rec-val', bad / 'bad.rec', '--rec-val-idx', bad / 'bad.idx', '--num-gpus', '0']
    done = run_command('train_imagenet.py', *argv, '--save-dir', tmp_path, '--logging-file',
                       tmp_path / 'log.txt', '--batch-size', '4', '--input-size', '32')
    assert_one_line_error(done, fragment)


def test_diverging_run_stops_keeps_its_last_good_checkpoint(world, tmp_path):
    out = tmp_path / 'diverged'
    done = run_command('train_cifar.py', *train(world['data'], out, '--num-epochs', '2',
                                                '--lr', '1e6'))
    assert_one_line_error(done, 'diverged', status=4)
    for path in out.glob('*.params'):
        assert all(np.isfinite(v.asnumpy()).all() for v in mx.nd.load(str(path)).values()), path
    assert not list(out.glob('*-final.params'))


def test_resuming_from_an_epoch_file_continues_after_it(world, tmp_path):
    run = tmp_path / 'run'
    assert run_command('train_cifar.py', *train(world['data'], run, '--num-epochs', '2')
                       ).returncode == 0
    epoch0 = next(run.glob('*-epoch0000.params'))
    done = run_command('train_cifar.py', *train(world['data'], run, '--num-epochs', '2',
                                                '--resume-from', epoch0))
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'continuing at epoch 1' in done.stderr


def test_a_second_run_overwrites_only_when_asked(world, tmp_path):
    run = tmp_path / 'run'
    for path in world['run'].iterdir():
        if path.is_file():
            run.mkdir(exist_ok=True)
            (run / path.name).write_bytes(path.read_bytes())
    done = run_command('train_cifar.py', *train(world['data'], run, '--overwrite'))
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize('stop, status, words', [(signal.SIGINT, 130, 'interrupted'),
                                                  (signal.SIGTERM, 143, 'terminated (SIGTERM)')])
def test_interrupt_is_one_line_and_keeps_the_checkpoints(world, tmp_path, stop, status, words):
    """Ctrl-C, and SIGTERM as schedulers send on preemption: one line naming the checkpoint
    that is kept."""
    out = tmp_path / 'interrupted'
    command = [sys.executable, str(REPO / 'train_cifar.py'),
               *train(world['data'], out, '--num-epochs', '50')]
    # a run started in the background inherits an ignored SIGINT (and Python then installs
    # no KeyboardInterrupt handler): the child gets the default, as a terminal's job has
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV, cwd=REPO,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pointer = out / f'{MODEL}-checkpoint.json'
    deadline = time.time() + 120
    while not pointer.exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status and 'Traceback' not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'error: {words}') and '-epoch0' in last, last
    assert json.loads(pointer.read_text())['epoch'] >= 0


@pytest.mark.parametrize('name, value', [('OMP_NUM_THREADS', 'abc'),
                                         ('MXNET_CPU_WORKER_NTHREADS', '2.5'),
                                         ('MXNET_MKLDNN_ENABLED', 'yes')])
def test_an_environment_value_mxnet_cannot_parse_is_one_line(tmp_path, name, value):
    """MXNet aborts its own import (exit 134) on these; the package refuses them first."""
    done = subprocess.run([sys.executable, str(REPO / 'train_cifar.py'), '--help'],
                          capture_output=True, text=True, env=dict(ENV, **{name: value}),
                          cwd=REPO, timeout=120)
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {name}={value!r}: '), lines


def test_disk_full_is_one_line(world, tmp_path):
    code = ('import errno, sys\n'
            'import openaff.engine.checkpoint as c\n'
            'def full(path, write):\n'
            '    raise OSError(errno.ENOSPC, "No space left on device", path)\n'
            'c.atomic_save = full\n'
            'from openaff.cli.train_cifar import main\n'
            f'sys.exit(main({[str(a) for a in train(world["data"], tmp_path / "full")]!r}))\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=300)
    assert_one_line_error(done, 'No space left on device', status=1)


# ---------------------------------------------------------------- the other commands
OTHER_CASES = [
    ('evaluate a missing file', 'openaff.cli.evaluate', lambda w: [w['root'] / 'missing.params'],
     'no such file'),
    ('evaluate NaN weights', 'openaff.cli.evaluate', lambda w: [w['nan'], '--data-dir', w['data']],
     'non-finite'),
    ('evaluate integer weights', 'openaff.cli.evaluate', lambda w: [w['ints'], '--data-dir',
                                                                 w['data']], 'int32'),
    ('evaluate a corrupt file', 'openaff.cli.evaluate', lambda w: [w['broken'] / 'garbage.params'],
     'garbage.params'),
    ('evaluate negative precise BN', 'openaff.cli.evaluate', lambda w: [w['final'], '--precise-bn',
                                                                     '-5'], '--precise-bn'),
    ('summary input size 0', 'openaff.cli.summary', lambda w: ['cifar_aff_resnet32', '--input-size',
                                                            '0'], '--input-size'),
    ('summary input size 1', 'openaff.cli.summary', lambda w: ['cifar_aff_resnet32', '--input-size',
                                                            '1'], 'input'),
    ('benchmark on a missing GPU', 'openaff.cli.benchmark', lambda w: ['--ctx', 'gpu', '--models',
                                                                    'cifar_aff_resnet32'], 'gpu'),
    ('benchmark unknown backend', 'openaff.cli.benchmark', lambda w: ['--optimize-for', 'BOGUS',
                                                                   '--set', 'cifar'],
     '--optimize-for'),
    ('compare zero epochs', 'openaff.cli.compare', lambda w: ['--epochs', '0'], '--epochs'),
    ('compare reuse of nothing', 'openaff.cli.compare', lambda w: ['--reuse', '--out',
                                                                w['root'] / 'empty'], '--reuse'),
    ('evaluate batch size 0', 'openaff.cli.evaluate', lambda w: [w['final'], '--batch-size', '0'],
     '--batch-size'),
    ('plotlog with labels for other logs', 'openaff.cli.plotlog', lambda w: [w['root'] / 'orig.log',
                                                                          '--labels', 'a', 'b'],
     '--labels'),
    ('segmentation canvas too small', 'openaff.cli.train_segmentation',
     lambda w: ['--size', '12', '--save-dir', w['root'] / 'seg'], '--size'),
    ('segmentation unknown merge', 'openaff.cli.train_segmentation',
     lambda w: ['--merge', 'sum', '--save-dir', w['root'] / 'seg'], '--merge'),
    ('segmentation zero foreground weight', 'openaff.cli.train_segmentation',
     lambda w: ['--foreground-weight', '0', '--save-dir', w['root'] / 'seg'],
     '--foreground-weight'),
    ('plotlog of a log without epochs', 'openaff.cli.plotlog', lambda w: [w['root'] / 'orig.log',
                                                                       '-o', w['root'] / 'p.png'],
     'no "[Epoch N]'),
]


@pytest.mark.parametrize('case, module, argv, fragment', OTHER_CASES,
                         ids=[c[0] for c in OTHER_CASES])
def test_commands_refuse_bad_input(world, case, module, argv, fragment):
    assert_one_line_error(run_command(module, *argv(world)), fragment)


def test_resume_from_random_bytes_is_one_line(world, tmp_path):
    noise = tmp_path / 'noise.params'
    noise.write_bytes(np.random.RandomState(0).bytes(4096))
    done = run_command('train_cifar.py', *train(world['data'], tmp_path / 'out', '--resume-from',
                                                noise))
    assert_one_line_error(done, 'not a parameter file MXNet can read')
    assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').glob('*.log'))


def test_resume_from_another_architecture_is_one_line_before_any_log(world, tmp_path):
    other = tmp_path / 'other'
    done = run_command('train_cifar.py', *train(world['data'], other, '--blocks', '2'))
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / 'out'
    done = run_command('train_cifar.py', *train(world['data'], out, '--resume-from',
                                                next(other.glob('*-epoch0000.params'))))
    assert_one_line_error(done, 'a checkpoint of another network')
    assert not list(out.glob('*.log'))


def test_two_runs_into_one_folder_at_once_the_second_is_refused(world, tmp_path):
    """The first run holds the folder's lock while it trains: a second run of the same model
    into the same --save-dir stops in one line instead of overwriting its checkpoints."""
    out = tmp_path / 'shared'
    first = subprocess.Popen([sys.executable, str(REPO / 'train_cifar.py'),
                              *train(world['data'], out, '--num-epochs', '50')],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                             cwd=REPO)
    try:
        deadline = time.time() + 120
        while not list(out.glob('train_*.log')) and time.time() < deadline:
            time.sleep(0.1)
        second = run_command('train_cifar.py', *train(world['data'], out, '--overwrite'))
        assert_one_line_error(second, 'is writing to')
        assert first.poll() is None
    finally:
        first.kill()
        first.communicate()
    # the lock dies with its process: a new run may take the folder
    again = run_command('train_cifar.py', *train(world['data'], out, '--overwrite'))
    assert again.returncode == 0, again.stderr[-2000:]
