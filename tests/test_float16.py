"""float16 networks, SyncBatchNorm and precise BN, proven on the CPU.

No machine here runs MXNet on a GPU, so the GPU paths are checked through what the CPU can
show: float16 graphs by type inference (mxnet's CPU kernels have no float16 convolution or
dense layer), the pieces that do run in float16 on a CPU (BatchNorm, the input-statistics
update, SyncBatchNorm on one device), and device lists without cpu(0) (``[cpu(1), cpu(2)]``)
for the engine's multi-device precise BN. Code that could hang (SyncBatchNorm barriers) runs
in a child process with a timeout, so a regression fails instead of hanging the suite.
"""
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest
from conftest import REPO, classifier_engine
from mxnet import autograd, gluon

import openaff.batchnorm
from openaff import get_model, list_models
from openaff._gluon import batch_norms
from openaff.batchnorm import precise_bn, use_sync_batchnorm
from openaff.engine import Recipe
from openaff.fusion.graphs import graph_target
from openaff.models._common import update_input_stats

DEVICES = [mx.cpu(1), mx.cpu(2)]
TINY_CIFAR = dict(layers=[1, 1, 1], channels=[8, 8, 16, 32], classes=10)


def float16_graph(name, sync):
    """``(symbol, net)``: zoo network ``name`` (SyncBatchNorm over 2 devices when ``sync``),
    initialised on the CPU, cast to float16, traced as for a GPU running float16."""
    net = get_model(name)
    if sync:
        use_sync_batchnorm(net, 2)
    net.initialize(mx.init.Xavier())
    net.cast('float16')
    with graph_target('gpu', 'float16'):
        return net(mx.sym.var('data')), net


def inferred_types(sym, **inputs):
    """Every output of every node of ``sym`` with its inferred dtype, and the arguments and
    auxiliary states with theirs."""
    internals = sym.get_internals()
    args, outs, aux = internals.infer_type(**inputs)
    return (dict(zip(internals.list_outputs(), outs)),
            {**dict(zip(internals.list_arguments(), args)),
             **dict(zip(internals.list_auxiliary_states(), aux))})


@pytest.mark.parametrize('sync', [False, True], ids=['batchnorm', 'syncbn'])
@pytest.mark.parametrize('name', list_models())
def test_zoo_network_type_checks_in_float16(name, sync):
    """The graph a GPU would run for ``--dtype float16``: float16 in and out, every BatchNorm's
    parameters and running statistics float32, every SyncBatchNorm operator fed and run in
    float32 (its only kernel), and none of the CPU-only float32 native operators."""
    sym, net = float16_graph(name, sync)
    outputs, inputs = inferred_types(sym, data='float16')
    assert sym.infer_type(data='float16')[1] == [np.float16]
    for norm in batch_norms(net):
        for param in (norm.gamma, norm.beta, norm.running_mean, norm.running_var):
            assert np.dtype(param.dtype) == np.float32, param.name
            assert inputs[param.name] == np.float32, param.name
    nodes = json.loads(sym.tojson())['nodes']
    synced = [node['name'] for node in nodes if node['op'] == '_contrib_SyncBatchNorm']
    assert len(synced) == (len(batch_norms(net)) if sync else 0)
    for node in synced:
        assert outputs[f'{node}_output'] == np.float32, node
    native = {node['op'] for node in nodes if node['op'].startswith('openaff_')}
    assert not native, f'CPU-only float32 operators in a float16 graph: {native}'


# ---------------------------------------------------------------- input statistics
def test_input_statistics_of_float16_batches_are_float32_and_do_not_overflow():
    """A CIFAR batch of 128 holds 131072 values per channel: their float16 sum passes 65504
    (inf), and float16 statistics cannot be added to the float32 running ones (MXNetError)."""
    net = get_model('cifar_aff_resnet20', **TINY_CIFAR)
    net.initialize()
    net.features[0](mx.nd.zeros((1, 3, 32, 32)))  # its shapes (the convolutions need none)
    net.cast('float16')
    norm = net.features[0]
    rng = np.random.RandomState(0)
    centre = np.array([3.0, -20.0, 150.0]).reshape(1, 3, 1, 1)
    spread = np.array([2.0, 5.0, 30.0]).reshape(1, 3, 1, 1)
    batch = (centre + spread * rng.standard_normal((128, 3, 32, 32))).astype(np.float16)
    with np.errstate(over='ignore'):
        assert np.isinf(batch.sum(axis=(0, 2, 3), dtype=np.float16)).all()
    update_input_stats(norm, mx.nd.array(batch, dtype='float16'), 0.9)
    mean, var = norm.running_mean.data(), norm.running_var.data()
    assert mean.dtype == var.dtype == np.float32
    exact = batch.astype(np.float64)
    np.testing.assert_allclose(mean.asnumpy(), 0.1 * exact.mean(axis=(0, 2, 3)), rtol=2e-6)
    np.testing.assert_allclose(var.asnumpy(), 0.9 + 0.1 * exact.var(axis=(0, 2, 3)),
                               rtol=2e-6)


# ---------------------------------------------------------------- SyncBatchNorm in float16
def norm_pair(channels=4):
    """A network holding one BatchNorm, and its SyncBatchNorm twin (``ndev=1``), cast to
    float16 like a ``--dtype float16 --syncbn`` network, with the same random gamma/beta."""
    nets = []
    for sync in (False, True):
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.BatchNorm(in_channels=channels))
        if sync:
            assert use_sync_batchnorm(net, 1) == 1
            net.cast('float16')
        net.initialize()
        rng = np.random.RandomState(3)
        net[0].gamma.set_data(mx.nd.array(rng.uniform(0.5, 2, channels)))
        net[0].beta.set_data(mx.nd.array(rng.uniform(-1, 1, channels)))
        nets.append(net)
    return nets


@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybrid'])
def test_sync_batchnorm_runs_float16_like_float32_batchnorm(hybridize):
    """mxnet 1.9.1's SyncBatchNorm kernel reads its data as float32 and refuses float16; the
    layer converted by use_sync_batchnorm casts around it. Training-mode output and gradients
    match float32 BatchNorm to float16 round-off; the output stays float16."""
    plain, synced = norm_pair()
    assert isinstance(synced[0], gluon.contrib.nn.SyncBatchNorm)
    assert np.dtype(synced[0].gamma.dtype) == np.float32
    if hybridize:
        synced.hybridize()
    x = mx.nd.array(5 + 3 * np.random.RandomState(4).standard_normal((8, 4, 6, 6)))
    results = []
    for net, data in ((plain, x), (synced, x.astype('float16'))):
        data.attach_grad()
        with autograd.record(train_mode=True):
            out = net(data)
            loss = (out.astype('float32') * mx.nd.arange(out.size).reshape(out.shape) / 1e3)
        loss.backward()
        results.append((out, data.grad, net[0].gamma.grad(), net[0].beta.grad()))
    (out32, dx32, dgamma32, dbeta32), (out16, dx16, dgamma16, dbeta16) = results
    assert out16.dtype == dx16.dtype == np.float16
    assert dgamma16.dtype == dbeta16.dtype == np.float32
    np.testing.assert_allclose(out16.asnumpy(), out32.asnumpy(), rtol=0, atol=4e-3)
    for got, want in ((dx16, dx32), (dgamma16, dgamma32), (dbeta16, dbeta32)):
        want = want.asnumpy()
        np.testing.assert_allclose(got.asnumpy(), want, rtol=0,
                                   atol=4e-3 * np.abs(want).max())


def test_sync_batchnorm_keeps_float32_graphs_and_converts_gluon_ones():
    """A float32 SyncBatchNorm traces Gluon's graph (no casts); a Gluon SyncBatchNorm already
    in a network is converted too, to the requested device count; a network cast before the
    conversion still gets its casts."""
    net = get_model('cifar_aff_resnet20', norm_layer=gluon.contrib.nn.SyncBatchNorm,
                    norm_kwargs={'num_devices': 1}, **TINY_CIFAR)
    assert use_sync_batchnorm(net, 2) == len(batch_norms(net))
    assert {norm._kwargs['ndev'] for norm in batch_norms(net)} == {2}
    ops = {node['op'] for node in json.loads(net(mx.sym.var('data')).tojson())['nodes']}
    assert '_contrib_SyncBatchNorm' in ops and 'Cast' not in ops
    late = get_model('cifar_aff_resnet20', **TINY_CIFAR)
    late.cast('float16')
    use_sync_batchnorm(late, 2)
    outputs, _ = inferred_types(late(mx.sym.var('data')), data='float16')
    synced = [key for key in outputs if 'batchnorm' in key and key.endswith('fwd_output')]
    assert synced and all(outputs[key] == np.float32 for key in synced)


# ---------------------------------------------------------------- precise BN
def run_child(code, timeout=120, env=None):
    """Run ``code`` in a fresh interpreter; a SyncBatchNorm barrier that waits forever fails
    the test after ``timeout`` seconds instead of hanging the suite."""
    script = textwrap.dedent('''
        import mxnet as mx, numpy as np
        from openaff import get_model
        from openaff._gluon import batch_norms
        from openaff.batchnorm import precise_bn, use_sync_batchnorm
        TINY = dict(layers=[1, 1, 1], channels=[8, 8, 16, 32], classes=10)
        rng = np.random.RandomState(0)
        DATA = [mx.nd.array(rng.normal(1.5, 2.0, size=(8, 3, 32, 32))) for _ in range(3)]
        def stats(net):
            return np.concatenate([np.concatenate([n.running_mean.list_data()[0].asnumpy(),
                                                   n.running_var.list_data()[0].asnumpy()])
                                   for n in batch_norms(net)])
        def build(ctx, sync, net=None):
            mx.random.seed(7)
            net = net or get_model('cifar_aff_resnet32', **TINY)
            if sync:
                use_sync_batchnorm(net, 2)
            net.initialize(mx.init.Xavier(), ctx=ctx)
            first = ctx[0] if isinstance(ctx, list) else ctx
            net(DATA[0][:2].as_in_context(first))  # the weights now, from this seed
            return net
    ''') + textwrap.dedent(code) + '\nprint("FINISHED")\n'
    try:
        done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
        pytest.fail(f'did not finish in {timeout} s (a SyncBatchNorm barrier waiting for '
                    f'devices that never come)')
    assert done.returncode == 0 and 'FINISHED' in done.stdout, done.stderr[-3000:]
    return done.stdout


def test_precise_bn_of_a_syncbn_network_finishes_and_equals_the_plain_network():
    """A network made SyncBatchNorm for 2 devices, re-estimated on one device (where the
    barrier would wait for a second device forever): the statistics of the plain network,
    whose BatchNorms see the whole batch as SyncBatchNorm does; the layers are SyncBatchNorms
    again afterwards. Over two CPU devices (where mxnet's barrier deadlocks) each slice is
    normalised alone, as in the plain network on the same devices."""
    run_child('''
        from mxnet.gluon.contrib.nn import SyncBatchNorm
        plain, synced = build(mx.cpu(), False), build(mx.cpu(), True)
        synced.hybridize()
        assert precise_bn(plain, DATA) == precise_bn(synced, DATA) == len(batch_norms(plain))
        np.testing.assert_allclose(stats(synced), stats(plain), rtol=1e-6, atol=1e-7)
        assert all(isinstance(n, SyncBatchNorm) for n in batch_norms(synced))
        assert {n._kwargs['ndev'] for n in batch_norms(synced)} == {2}
        devices = [mx.cpu(1), mx.cpu(2)]
        plain, synced = build(devices, False), build(devices, True)
        precise_bn(plain, DATA, ctx=devices)
        precise_bn(synced, DATA, ctx=devices)
        np.testing.assert_allclose(stats(synced), stats(plain), rtol=1e-6, atol=1e-7)
    ''')


def test_synchronised_precise_bn_over_two_devices_equals_one_whole_batch():
    """The path a SyncBatchNorm network takes on its GPUs: the slices of each batch on
    ``ndev`` devices meet at the barriers (every forward queued before a statistic is read,
    each batch finished before the next), and the statistics are those of the plain network
    on whole batches; each slice normalised alone gives others. Shown on cpu(1) and cpu(2),
    allowed for the test with what mxnet gives each GPU and not each CPU device (see
    ``openaff.batchnorm._SYNC_DEVICE_TYPES``): more than one worker thread, and workspaces
    and random generators of its own -- copies are handed out in turn, so twice as many as
    one device's operators request per batch keep the devices apart."""
    run_child('''
        import openaff.batchnorm as bn
        bn._SYNC_DEVICE_TYPES = ('gpu', 'cpu')
        devices = [mx.cpu(1), mx.cpu(2)]
        whole = build(mx.cpu(), False)
        precise_bn(whole, DATA)
        synced = build(devices, True)
        precise_bn(synced, DATA, ctx=devices)
        np.testing.assert_allclose(stats(synced), stats(whole), rtol=1e-4, atol=1e-5)
        alone = build(devices, False)
        precise_bn(alone, DATA, ctx=devices)
        assert not np.allclose(stats(alone), stats(whole), rtol=1e-4, atol=1e-5)
    ''', env={'MXNET_CPU_WORKER_NTHREADS': '4', 'MXNET_CPU_TEMP_COPY': '1000',
            'MXNET_CPU_PARALLEL_RAND_COPY': '64'})


def test_syncbn_layers_synchronise_only_where_their_barrier_can_be_met():
    norm = openaff.batchnorm.SyncBatchNorm(num_devices=2)
    assert openaff.batchnorm._synchronised(norm, [mx.gpu(0), mx.gpu(1)])
    for contexts in (None, [mx.gpu(0)], [mx.gpu(0), mx.gpu(1), mx.gpu(2)], DEVICES,
                     [mx.gpu(0), mx.gpu(0)]):
        assert not openaff.batchnorm._synchronised(norm, contexts), contexts
    one = openaff.batchnorm.SyncBatchNorm(num_devices=1)
    assert openaff.batchnorm._synchronised(one, None)
    assert openaff.batchnorm._synchronised(one, [mx.cpu(1)])


def test_a_batch_smaller_than_the_device_list_goes_to_fewer_devices(monkeypatch):
    """As a training step does; unless SyncBatchNorms wait for every device, which is said
    before anything runs."""
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.BatchNorm(in_channels=3))
    net.initialize(ctx=DEVICES)
    single = mx.nd.array(np.random.RandomState(8).normal(1, 2, (1, 3, 5, 5)))
    precise_bn(net, [single], ctx=DEVICES)
    np.testing.assert_allclose(net[0].running_mean.list_data()[1].asnumpy(),
                               single.asnumpy().mean(axis=(0, 2, 3)), rtol=1e-6)
    monkeypatch.setattr(openaff.batchnorm, '_SYNC_DEVICE_TYPES', ('gpu', 'cpu'))
    use_sync_batchnorm(net, 2)
    with pytest.raises(ValueError, match='batch of 1 samples cannot be split over the 2'):
        precise_bn(net, [single], ctx=DEVICES)


def test_engine_precise_bn_splits_each_batch_over_its_devices(tmp_path):
    """Engine._refresh_bn runs every batch as a training step does: one slice per device,
    never the whole batch on the first one; the statistics are over every sample."""
    net = get_model('cifar_aff_resnet20', **TINY_CIFAR)
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    rng = np.random.RandomState(5)
    train = [(mx.nd.array(rng.normal(2, 3, (6, 3, 32, 32))), mx.nd.zeros(6)) for _ in range(3)]
    engine = classifier_engine(net, Recipe(precise_bn=2, seed=0), DEVICES, train, [], 10,
                               'split', str(tmp_path))
    seen = []
    handle = net.features[0].register_forward_pre_hook(
        lambda block, inputs: seen.append((inputs[0].context, inputs[0].shape[0])))
    try:
        engine._refresh_bn()
    finally:
        handle.detach()
    assert seen == [(mx.cpu(1), 3), (mx.cpu(2), 3)] * 2
    used = np.concatenate([data.asnumpy() for data, _ in train[:2]])
    for copy in net.features[0].running_mean.list_data():
        np.testing.assert_allclose(copy.asnumpy(), used.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_engine_precise_bn_of_a_float16_network_casts_on_each_device(tmp_path):
    """A float16 engine casts each slice on its device; the statistics of float16 inputs
    whose float16 sums overflow come out finite and exact to float32 round-off."""
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.BatchNorm(in_channels=3), gluon.nn.BatchNorm(in_channels=3))
    net.initialize(ctx=DEVICES)
    net.cast('float16')
    rng = np.random.RandomState(6)
    train = [(mx.nd.array(rng.normal(300, 40, (64, 3, 32, 32))), mx.nd.zeros(64))
             for _ in range(2)]
    engine = classifier_engine(net, Recipe(precise_bn=2, dtype='float16', seed=0), DEVICES,
                               train, [], 3, 'half', str(tmp_path))
    engine._refresh_bn()
    used = np.concatenate([data.asnumpy() for data, _ in train]).astype(np.float16)
    used = used.astype(np.float64)
    for copy in net[0].running_mean.list_data() + net[0].running_var.list_data():
        assert copy.dtype == np.float32 and np.isfinite(copy.asnumpy()).all()
    np.testing.assert_allclose(net[0].running_mean.list_data()[1].asnumpy(),
                               used.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(net[0].running_var.list_data()[1].asnumpy(),
                               used.var(axis=(0, 2, 3)), rtol=1e-5)
