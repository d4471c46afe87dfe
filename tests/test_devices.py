"""Several devices in one process, proven on CPU stand-ins: device lists without ``cpu(0)``
(a GPU list never holds it), through the engine and through the commands a user runs --
training, checkpoint, resume, evaluation, precise BN, AMP with a skipped overflowing step,
distillation -- and the host syncs of the training loop."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from conftest import REPO, classifier_engine

from openaff.engine import Recipe
from openaff.engine.devices import (
    cpu_runs_bfloat16,
    default_devices,
    describe_devices,
    parse_devices,
)
from openaff.engine.distributed import Cluster
from openaff.models import CIFARAFFResNet

DEVICES = [mx.cpu(1), mx.cpu(2)]
ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1')


needs_bfloat16 = pytest.mark.skipif(not cpu_runs_bfloat16(),
                                    reason='this CPU has no AVX-512: oneDNN runs no bfloat16 '
                                           'convolution here')


def tiny_net(fusion='ASKCFuse'):
    return CIFARAFFResNet(askc_type=fusion, start_layer=1, layers=[1, 1, 1],
                          channels=[8, 8, 16, 16], classes=4, deep_stem=False)


def batches(count, batch=8, seed=0):
    rng = np.random.RandomState(seed)
    return [(mx.nd.array(rng.standard_normal((batch, 3, 16, 16))),
             mx.nd.array(rng.randint(0, 4, batch), dtype='float32')) for _ in range(count)]


# ---------------------------------------------------------------- parsing
def test_device_lists_parse_and_bad_ones_are_named():
    assert parse_devices('cpu:1, cpu:2') == DEVICES
    assert parse_devices('cpu') == [mx.cpu(0)]
    assert describe_devices(DEVICES) == 'cpu:1,cpu:2'
    for text, words in (('tpu:0', 'cpu:N or gpu:N'), ('cpu:x', 'cpu:N or gpu:N'),
                        ('cpu:1,cpu:1', 'twice'), ('', 'no device'),
                        ('gpu:0', 'GPU'), ('cpu:0,gpu:0', 'GPU')):
        with pytest.raises(ValueError, match=words):
            parse_devices(text)


def test_workers_of_one_host_share_its_gpus(monkeypatch):
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 4)
    assert default_devices('0,1,2,3') == [mx.gpu(i) for i in range(4)]
    assert default_devices(num_gpus=4, local_rank=1, local_size=2) == [mx.gpu(2), mx.gpu(3)]
    with pytest.raises(ValueError, match='share 4 GPU'):
        default_devices(num_gpus=4, local_rank=0, local_size=8)
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 0)
    assert default_devices('0,1,2,3') == [mx.cpu()]


# ---------------------------------------------------------------- the engine
def make_engine(tmp_path, net, recipe=None, teacher=None, train=None, val=None):
    return classifier_engine(net, recipe or Recipe(num_epochs=1, lr=0.05, seed=0), DEVICES,
                             train if train is not None else batches(4),
                             val or batches(2, seed=1), 4, 'tiny', str(tmp_path), teacher=teacher)


def test_fit_checkpoints_on_devices_without_cpu0(tmp_path):
    net = tiny_net()
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    records = make_engine(tmp_path, net).fit()
    assert len(records) == 1 and np.isfinite(records[0]['train_loss'])
    saved = mx.nd.load(str(next(tmp_path.glob('tiny-epoch0000.params'))))
    assert all(np.isfinite(v.asnumpy()).all() for v in saved.values())
    for param in net.collect_params().values():  # the weights stayed one network
        if param.grad_req == 'null':
            continue  # running statistics: each device averages its own slices
        copies = [d.asnumpy() for d in param.list_data()]
        np.testing.assert_array_equal(copies[0], copies[1])


class _TwoIdenticalWorkers:
    """Horovod's collectives as two workers holding the same values would see them."""

    @staticmethod
    def allreduce(array, average, name):
        if average:
            return array
        if name.endswith('digests'):  # each worker fills its own row of a zero table
            rows = array.reshape((2, -1))
            return mx.nd.concat(rows.sum(axis=0, keepdims=True),
                                rows.sum(axis=0, keepdims=True), dim=0).reshape((-1,))
        return array * 2


def test_cluster_reductions_read_parameters_on_devices_without_cpu0():
    net = tiny_net()
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    net(batches(1)[0][0].as_in_context(DEVICES[0]))
    cluster = Cluster('horovod', rank=0, size=2, hvd=_TwoIdenticalWorkers())
    before = {k: p.list_data()[1].asnumpy() for k, p in net.collect_params().items()}
    cluster.synchronize(net)
    for key, param in net.collect_params().items():
        for copy in param.list_data():
            np.testing.assert_allclose(copy.asnumpy(), before[key], rtol=1e-6)
    digests = cluster.parameter_digests(net)
    assert len(digests) == 2 and len(set(digests)) == 1


def test_distillation_on_devices(tmp_path):
    net, teacher = tiny_net(), tiny_net('DirectAdd')
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    teacher.initialize(mx.init.Xavier(), ctx=DEVICES)
    recipe = Recipe(num_epochs=1, lr=0.05, seed=0, temperature=4, hard_weight=0.5)
    records = make_engine(tmp_path, net, recipe, teacher=teacher).fit()
    assert np.isfinite(records[0]['train_loss'])


def test_metrics_reach_the_host_once_per_interval(tmp_path, monkeypatch):
    """Each step only queues its statistics; the loop waits for the devices once per report
    interval (8 batches, interval 4: two transfers), not three times per device and step."""
    net = tiny_net('DirectAdd')
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    engine = make_engine(tmp_path, net, train=batches(8))
    engine.report.interval = 4
    calls = []
    for method in ('asnumpy', 'asscalar'):
        original = getattr(mx.nd.NDArray, method)
        monkeypatch.setattr(mx.nd.NDArray, method,
                            lambda self, _f=original, _m=method: calls.append(_m) or _f(self))
    record = engine.train_epoch(0)
    assert len(calls) == 2, calls
    assert record['train_loss'] > 0 and 0 <= record['train_acc'] <= 1


# ---------------------------------------------------------------- AMP: overflow skipped
AMP_OVERFLOW = r'''
import mxnet as mx, numpy as np
from mxnet import gluon
from mxnet.contrib import amp
amp.init(target_dtype='bfloat16')
from openaff.engine import Engine, Outputs, Recipe
from openaff.engine.reporting import CifarReport
from openaff.engine.tasks import Classification
devices = [mx.cpu(1), mx.cpu(2)]
# element-wise layers only: AMP keeps them float32, so no bfloat16 kernel is needed and the
# test runs on any CPU; what is checked is the loss scaler's skip with several devices
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Flatten(), gluon.nn.LeakyReLU(0.1))
class Scale(gluon.HybridBlock):
    def __init__(self):
        super().__init__()
        self.w = self.params.get('w', shape=(1, 4), init=mx.init.One())
    def hybrid_forward(self, F, x, w):
        return F.broadcast_mul(x, w)
net.add(Scale())
net.initialize(ctx=devices)
engine = Engine(net, Recipe(amp=True, lr=0.1, seed=0), devices, [], [], Classification(4),
                CifarReport(), Outputs('amp', SAVE))
x = [mx.nd.ones((2, 4), ctx=c) for c in devices]
t = [mx.nd.one_hot(mx.nd.array([0, 1], ctx=c), 4) for c in devices]
scaler = engine.trainer._amp_loss_scaler
before = [d.asnumpy() for d in net[-1].w.list_data()]
engine.update([v * 1e38 for v in x], t, 4)   # the scaled loss overflows every gradient
after = [d.asnumpy() for d in net[-1].w.list_data()]
assert all(np.isfinite(a).all() for a in after), after
assert all((a == b).all() for a, b in zip(after, before)), 'the overflowing step was applied'
assert scaler._next_loss_scale < scaler.loss_scale, 'the loss scale did not shrink'
engine.update(x, t, 4)
stepped = [d.asnumpy() for d in net[-1].w.list_data()]
assert not (stepped[0] == before[0]).all() and (stepped[0] == stepped[1]).all()
print('OK')
'''


def test_amp_skips_an_overflowing_step_on_several_devices(tmp_path):
    code = f'SAVE = {str(tmp_path)!r}\n' + AMP_OVERFLOW
    result = subprocess.run([sys.executable, '-c', code], env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


# ---------------------------------------------------------------- through the commands
def run_command(script, args, timeout=900):
    return subprocess.run([sys.executable, str(REPO / script), *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


DIGITS = ['--dataset', 'digits', '--devices', 'cpu:1,cpu:2', '--channel-times', '1',
          '--batch-size', '32', '-j', '0', '--seed', '1', '--num-epochs', '2',
          '--warmup-epochs', '1']


def out_args(path):
    return ['--save-dir', str(path), '--logging-dir', str(path), '--save-plot-dir', str(path)]


def final_params(path):
    return {k: v.asnumpy() for k, v in
            mx.nd.load(str(next(path.glob('*-final.params')))).items()}


@pytest.mark.slow
def test_train_checkpoint_resume_and_evaluate_on_two_devices(tmp_path):
    """train_cifar.py on cpu:1,cpu:2 with precise BN: it logs its devices, checkpoints every
    epoch, a run resumed from epoch 0's checkpoint ends bit-identical to the uninterrupted one,
    and openaff-evaluate on the same devices reproduces the logged accuracy."""
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    args = [*DIGITS, '--precise-bn', '2', '--save-period', '1']
    done = run_command('train_cifar.py', [*args, *out_args(whole)])
    assert done.returncode == 0, done.stderr[-3000:]
    log = next(whole.glob('train_*.log')).read_text().splitlines()
    assert log[1] == 'Devices: cpu:1,cpu:2 | precision: float32 | kvstore device, one process'
    epoch0 = next(whole.glob('*-epoch0000.params'))
    resumed.mkdir()
    for suffix in ('.params', '.states'):
        source = epoch0.with_suffix(suffix)
        (resumed / source.name).write_bytes(source.read_bytes())
    again = run_command('train_cifar.py', [*args, *out_args(resumed), '--resume-from',
                                           str(resumed / epoch0.name)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'continuing at epoch 1' in again.stderr
    one, other = final_params(whole), final_params(resumed)
    assert one.keys() == other.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], other[key], err_msg=key)
    record = json.loads(next(whole.glob('*-checkpoint.json')).read_text())
    evaluated = subprocess.run(
        [sys.executable, '-m', 'openaff.cli.evaluate', str(whole / record['params']), '--devices',
         'cpu:1,cpu:2',
         '--json', str(tmp_path / 'eval.json')], env=ENV, capture_output=True, text=True,
        timeout=300, cwd=REPO)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((tmp_path / 'eval.json').read_text())
    assert result['val_acc'] == pytest.approx(record['metrics']['val_acc'], abs=1e-9)


@pytest.mark.slow
@needs_bfloat16
def test_amp_on_two_devices_ends_with_finite_weights(tmp_path):
    done = run_command('train_cifar.py', [*DIGITS, '--amp', *out_args(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'AMP: bfloat16' in done.stderr
    assert all(np.isfinite(v).all() for v in final_params(tmp_path).values())


@pytest.mark.slow
def test_train_imagenet_synthetic_on_two_devices(tmp_path):
    done = run_command('train_imagenet.py', [
        '--synthetic', '--devices', 'cpu:1,cpu:2', '--batch-size', '4', '--input-size', '32',
        '--classes', '10', '--num-epochs', '1', '--lr', '0.001', '-j', '0',
        '--seed', '0', '--save-dir', str(tmp_path), '--logging-file',
        str(tmp_path / 'train.log'), '--dtype', 'float32'])
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / 'train.log').read_text()
    assert 'Devices: cpu:1,cpu:2 | precision: float32' in log
    assert '[Epoch 0] validation' in log


def test_a_bad_device_list_is_one_line_before_any_work(tmp_path):
    done = run_command('train_cifar.py', ['--dataset', 'digits', '--devices', 'gpu:7',
                                          *out_args(tmp_path)], timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith('error: --devices gpu:7: gpu:7')
    assert 'Traceback' not in done.stderr and not list(tmp_path.glob('*.log'))


@pytest.mark.skipif(cpu_runs_bfloat16(), reason='this CPU runs bfloat16')
def test_amp_without_bfloat16_kernels_is_one_line(tmp_path):
    done = run_command('train_cifar.py', [*DIGITS, '--amp', *out_args(tmp_path)], timeout=120)
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert 'AVX-512' in done.stderr.strip().splitlines()[-1]


def test_attention_maps_on_a_named_device(tmp_path):
    from openaff.cli import cam
    out = tmp_path / 'cam.png'
    assert cam.main(['cifar_aff_resnet20', '--image', str(REPO / 'docs' / 'digit-8.png'),
                     '--devices', 'cpu:1', '-o', str(out)]) == 0
    assert out.stat().st_size > 0


def test_a_batch_smaller_than_the_device_list_is_evaluated(tmp_path):
    """A shard's last validation batch can hold fewer images than the worker has devices."""
    from openaff.engine import evaluate
    net = tiny_net('DirectAdd')
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    x, y = batches(1)[0]
    result = evaluate(net, [(x, y), (x[:1], y[:1])], DEVICES)
    assert result['val_loss'] > 0 and 0 <= result['val_acc'] <= 1


def test_the_benchmark_times_the_named_device():
    from openaff.apps.benchmark import Settings
    from openaff.cli import benchmark
    opt = benchmark.build_parser().parse_args(['--devices', 'cpu:1'])
    benchmark.check_device(opt)
    assert Settings(device=opt.device, device_id=opt.device_id).ctx == mx.cpu(1)
    with pytest.raises(ValueError, match='times one device'):
        benchmark.check_device(benchmark.build_parser().parse_args(['--devices', 'cpu:1,cpu:2']))
