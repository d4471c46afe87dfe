"""The training scripts end to end on tiny data in the official formats, offline: one epoch
per format, clear errors, crash-safe resume, reproducibility, evaluation of what was saved."""
import glob
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
from conftest import REPO, run_dir_args, write_tiny_cifar

from openaff.cli import train_cifar, train_imagenet
from openaff.data.imagenet import make_rec

pytestmark = [pytest.mark.slow]

TINY_NET = ['--blocks', '1', '--channel-times', '1', '-j', '0', '--seed', '7']


@pytest.mark.parametrize('name, fmt, archive', [
    ('cifar100', 'python', False), ('cifar100', 'binary', False), ('cifar10', 'binary', False),
    ('cifar10', 'python', True), ('cifar100', 'binary', True)])
def test_train_cifar_one_epoch_on_official_formats(tmp_path, name, fmt, archive):
    data = write_tiny_cifar(tmp_path / 'data', name, fmt, archive)
    out = tmp_path / 'run'
    code = train_cifar.main(['--dataset', name, '--data-dir', str(data), '--num-epochs', '1',
                             '--batch-size', '16', *TINY_NET, *run_dir_args(out)])
    assert code == 0
    log = next(out.glob('train_*.log')).read_text()
    assert log.startswith('Namespace(') and '[Epoch 0] train=' in log and ' lr: ' in log
    assert list(out.glob('*-best.params')) and list(out.glob('*_history.png'))
    record = json.loads(next(out.glob('*-checkpoint.json')).read_text())
    assert record['epoch'] == 0 and record['net']['class'] == 'CIFARAFFResNet'


def test_coarse_labels_and_the_full_recipe_run(tmp_path):
    data = write_tiny_cifar(tmp_path / 'data', 'cifar100', 'python')
    code = train_cifar.main(['--dataset', 'cifar100', '--data-dir', str(data), '--labels',
                             'coarse', '--num-epochs', '2', '--batch-size', '16', '--mixup',
                             '--label-smoothing', '--cosine', '--no-wd', '--warmup-epochs', '1',
                             '--mixup-off-epoch', '1', '--auto_aug', '--precise-bn', '2',
                             *TINY_NET, *run_dir_args(tmp_path / 'run')])
    assert code == 0
    log = next((tmp_path / 'run').glob('train_*.log')).read_text()
    assert 'precise BN' in log and log.count('[Epoch ') == 2


def test_train_imagenet_one_epoch_from_rec_files(tmp_path):
    rng = np.random.RandomState(0)
    for split, n in (('train', 16), ('val', 8)):
        images = rng.randint(0, 255, size=(n, 40, 40, 3)).astype(np.uint8)
        make_rec(str(tmp_path / split), images, rng.randint(0, 4, size=n))
    code = train_imagenet.main([
        '--use-rec', '--rec-train', str(tmp_path / 'train.rec'), '--rec-train-idx',
        str(tmp_path / 'train.idx'), '--rec-val', str(tmp_path / 'val.rec'), '--rec-val-idx',
        str(tmp_path / 'val.idx'), '--num-gpus', '0', '--input-size', '32', '--batch-size', '4',
        '--classes', '4', '--num-epochs', '1', '-j', '1', '--num-layer', '50', '--seed', '1',
        '--save-dir', str(tmp_path / 'run'), '--logging-file', str(tmp_path / 'run' / 'log.txt'),
        '--mixup', '--label-smoothing', '--no-wd', '--warmup-epochs', '1'])
    assert code == 0
    log = (tmp_path / 'run' / 'log.txt').read_text()
    assert '[Epoch 0] validation: err-top1=' in log and 'float32' in log
    assert glob.glob(str(tmp_path / 'run'
                         / '*-imagenet-ImageNet-ASKCFuse-resnet--50-s-3-0-best.params'))


def test_missing_dataset_is_one_line_and_never_downloads(tmp_path, capsys, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError('tried to download')
    monkeypatch.setattr(mx.gluon.data.vision, 'CIFAR100', no_download)
    monkeypatch.setattr(mx.gluon.data.vision, 'CIFAR10', no_download)
    (tmp_path / 'empty').mkdir()
    code = train_cifar.main(['--dataset', 'cifar100', '--data-dir', str(tmp_path / 'empty'),
                             *TINY_NET, *run_dir_args(tmp_path / 'run')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith('error: ') and 'cifar-100' in err[-1].lower()
    assert 'Traceback' not in '\n'.join(err)
    code = train_imagenet.main(['--use-rec', '--rec-train', str(tmp_path / 'none.rec'),
                                '--num-gpus', '0', '--logging-file', str(tmp_path / 'l.txt')])
    assert code == 2 and capsys.readouterr().err.strip().startswith('error: ')


def test_evaluation_reproduces_the_logged_accuracy(tmp_path):
    from openaff import evaluate
    data = write_tiny_cifar(tmp_path / 'data', 'cifar10', 'binary')
    out = tmp_path / 'run'
    assert train_cifar.main(['--dataset', 'cifar10', '--data-dir', str(data), '--num-epochs',
                             '2', '--batch-size', '16', *TINY_NET, *run_dir_args(out)]) == 0
    best = next(out.glob('*-best.params'))
    result = evaluate.evaluate_checkpoint(str(best), evaluate.EvalData(data_dir=str(data)))
    assert result['reference_acc'] is not None
    assert abs(result['val_acc'] - result['reference_acc']) < 1e-9
    assert abs(result['val_acc'] - float(best.name.split('-')[0])) < 1e-4


# ---------------------------------------------------------------- crash safety
def cli(data, out, epochs, *extra):
    return [sys.executable, str(REPO / 'train_cifar.py'), '--dataset', 'cifar10', '--data-dir',
            str(data), '--num-epochs', str(epochs), '--batch-size', '32', '--mode', 'hybrid',
            *TINY_NET, *run_dir_args(out), *extra]


def wait_for_epoch(pointer, epoch, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pointer.exists():
            try:
                if json.loads(pointer.read_text())['epoch'] >= epoch:
                    return
            except (ValueError, KeyError):
                pass  # cannot happen with atomic writes; keep polling rather than crash
        assert process.poll() is None, 'the training process ended early'
        time.sleep(0.05)
    raise TimeoutError('no checkpoint appeared')


def assert_every_file_is_readable(directory):
    for path in glob.glob(os.path.join(directory, '*.params')):
        assert isinstance(mx.nd.load(path), dict)
    for path in glob.glob(os.path.join(directory, '*.states')):
        with open(path, 'rb') as handle:
            pickle.loads(handle.read())
    for path in glob.glob(os.path.join(directory, '*.json')):
        with open(path) as handle:
            json.load(handle)


def final_weights(directory):
    return mx.nd.load(next(iter(glob.glob(os.path.join(directory, '*-final.params')))))


@pytest.mark.multiprocess
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = write_tiny_cifar(tmp_path / 'data', 'cifar10', 'binary', n_train=128, n_test=32)
    epochs = 5
    # the machine's own threads and engine: the engine waits for the gradients before each
    # update, which makes CPU training bit-reproducible, resumed or not
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(cli(data, tmp_path / 'straight', epochs), check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    killed = tmp_path / 'killed'
    process = subprocess.Popen(cli(data, killed, epochs), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    pointer = killed / 'cifar10-ASKCFuse-resnet-8-c-1-s-1-checkpoint.json'
    wait_for_epoch(pointer, 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = json.loads(pointer.read_text())['epoch']
    assert interrupted_at < epochs - 1, 'the run finished before it could be killed'
    assert_every_file_is_readable(killed)

    resumed = subprocess.run(cli(data, killed, epochs, '--resume-from', 'latest'), env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f'continuing at epoch {interrupted_at + 1}' in resumed.stderr
    assert json.loads(pointer.read_text())['epoch'] == epochs - 1
    assert_every_file_is_readable(killed)
    log = next(killed.glob('train_*.log')).read_text()
    assert f'[Epoch {epochs - 1}]' in log

    straight, again = final_weights(tmp_path / 'straight'), final_weights(killed)
    assert straight.keys() == again.keys()
    for key in straight:
        np.testing.assert_array_equal(again[key].asnumpy(), straight[key].asnumpy(), err_msg=key)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    data = write_tiny_cifar(tmp_path / 'data', 'cifar10', 'binary')
    code = train_cifar.main(['--dataset', 'cifar10', '--data-dir', str(data), '--resume-from',
                             'latest', *TINY_NET, *run_dir_args(tmp_path / 'run')])
    assert code == 2 and 'no checkpoint' in capsys.readouterr().err


def test_gluoncv_baseline_trains_and_evaluates_in_the_same_formats(tmp_path):
    from openaff import evaluate
    data = write_tiny_cifar(tmp_path / 'data', 'cifar10', 'binary')
    runs = {}
    for label, model in (('aff', ['--model', 'resnet']),
                         ('baseline', ['--model', 'gluoncv:cifar_resnet20_v1'])):
        out = tmp_path / label
        assert train_cifar.main(['--dataset', 'cifar10', '--data-dir', str(data),
                                 '--num-epochs', '1', '--batch-size', '16', *model, *TINY_NET,
                                 *run_dir_args(out)]) == 0
        runs[label] = out
    for out in runs.values():
        log = next(out.glob('train_*.log')).read_text().splitlines()
        assert log[0].startswith('Namespace(') and log[-2].startswith('[Epoch 0] train=')
        record = json.loads(next(out.glob('*-checkpoint.json')).read_text())
        assert set(record) >= {'epoch', 'history', 'net', 'seed', 'bn_statistics'}
        best = next(out.glob('*-best.params'))
        result = evaluate.evaluate_checkpoint(str(best), evaluate.EvalData(data_dir=str(data)))
        assert evaluate.report(result).count('\n') == 6
    assert json.loads(next(runs['baseline'].glob('*-checkpoint.json')).read_text())['net'] == \
        {'class': 'gluoncv_net', 'kwargs': {'name': 'cifar_resnet20_v1', 'classes': 10}}


def test_unknown_models_are_one_line_errors(capsys):
    assert train_cifar.main(['--model', 'gluoncv:no_such_net']) == 2
    assert train_imagenet.main(['--model', 'vgg16']) == 2
    assert all(line.startswith('error: ') for line in capsys.readouterr().err.splitlines())


def test_digits_defaults_fill_only_what_the_command_line_leaves():
    """``--dataset digits`` alone is the Quick start's main job; any option given wins, and the
    CIFAR runs keep the original script's defaults."""
    digits = train_cifar.parse_options(['--dataset', 'digits', '--lr', '0.05', '--blocks', '2'])
    assert (digits.lr, digits.blocks) == (0.05, 2)
    assert digits.cosine and digits.num_epochs == train_cifar.DIGITS_DEFAULTS['num_epochs']
    cifar = train_cifar.parse_options(['--dataset', 'cifar100'])
    assert vars(cifar) == vars(train_cifar.build_parser().parse_args(['--dataset', 'cifar100']))


@pytest.mark.parametrize('script', ['cifar', 'imagenet'])
def test_the_original_flags_and_defaults_stay(script):
    """Every flag, default and choice of both scripts, as the original scripts have them
    (recorded in tests/data/script_options.json): generating the recipe's options from their
    declarations must not change one."""
    recorded = json.loads((REPO / 'tests' / 'data' / 'script_options.json').read_text())[script]
    parser = {'cifar': train_cifar, 'imagenet': train_imagenet}[script].build_parser()
    defaults = {k: repr(v) for k, v in vars(parser.parse_args([])).items()}
    assert defaults == recorded['defaults']
    assert sorted(s for a in parser._actions for s in a.option_strings) == recorded['options']
    assert {a.dest: list(a.choices) for a in parser._actions if a.choices} == \
        recorded['choices']


@pytest.mark.parametrize('argv, message', [
    (['--num-epochs', '0'], 'argument --num-epochs: must be at least 1'),
    (['--lr', 'nan'], 'argument --lr: must be a finite number'),
    (['--precise-bn', '-5'], 'argument --precise-bn: must be at least 0'),
    (['--lr-decay', '0'], 'argument --lr-decay: must be a finite number above 0'),
    (['--momentum', 'fast'], "argument --momentum: not a float: 'fast'"),
])
def test_recipe_values_are_checked_where_they_are_declared(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        train_cifar.build_parser().parse_args(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err
