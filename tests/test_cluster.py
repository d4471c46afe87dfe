"""The Cluster's device choice, worker placement, step size, and its Horovod trainer and
broadcast on several devices, in one process: Horovod is stood in for by a fake module whose
peer ranks hold the same gradients (real multi-rank runs: tests/test_layouts.py)."""
import mxnet as mx
import numpy as np
import pytest
from conftest import classifier_engine
from mxnet import gluon

from openaff.apps.launch import build_processes, local_placements
from openaff.engine import Recipe
from openaff.engine.distributed import (
    LOCAL_RANK_ENV,
    LOCAL_SIZE_ENV,
    Cluster,
    DistributedError,
    HorovodTrainer,
    _local_placement,
)

DEVICES = [mx.cpu(1), mx.cpu(2)]  # stands in for a GPU list: no cpu(0)


def horovod_cluster(rank=0, size=2, local_rank=0, local_size=2, hvd=None):
    return Cluster('horovod', rank, size, local_rank, hvd=hvd, local_size=local_size)


# ---------------------------------------------------------------- devices
def test_horovod_rank_without_its_gpu_is_an_error(monkeypatch):
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 2)
    assert horovod_cluster(1, 3, 1, 3).contexts([mx.cpu()]) == [mx.gpu(1)]
    with pytest.raises(DistributedError) as err:
        horovod_cluster(2, 3, 2, 3).contexts([mx.cpu()])
    message = str(err.value)
    assert 'local rank 2' in message and '2 GPU(s)' in message and '\n' not in message


def test_horovod_on_a_machine_without_gpus_trains_on_the_cpu(monkeypatch):
    monkeypatch.setattr(mx.context, 'num_gpus', lambda: 0)
    assert horovod_cluster(3, 4, 3, 4).contexts([mx.gpu(0)]) == [mx.cpu()]


def test_named_devices_win_for_every_kvstore(monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    for cluster in (Cluster(), Cluster('dist_sync', 1, 2, 1, local_size=2),
                    horovod_cluster(1, 2, 1, 2)):
        assert cluster.contexts([mx.cpu()], DEVICES) == DEVICES
    assert Cluster('dist_sync', 0, 2).contexts([mx.gpu(0), mx.gpu(1)]) == [mx.gpu(0), mx.gpu(1)]


def test_horovod_ranks_of_one_host_may_not_all_name_the_same_gpus(monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    gpus = [mx.gpu(0), mx.gpu(1)]
    with pytest.raises(DistributedError, match='same GPUs for all 2 Horovod ranks'):
        horovod_cluster(0, 2, 0, 2).contexts([mx.cpu()], gpus)
    assert horovod_cluster(0, 2, 0, 1).contexts([mx.cpu()], gpus) == gpus  # one rank per host
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')  # each rank sees its own GPUs
    assert horovod_cluster(0, 2, 0, 2).contexts([mx.cpu()], gpus) == gpus


# ---------------------------------------------------------------- placement
def test_parameter_server_workers_read_their_place_on_the_host(monkeypatch):
    monkeypatch.delenv(LOCAL_RANK_ENV, raising=False)
    monkeypatch.delenv(LOCAL_SIZE_ENV, raising=False)
    assert _local_placement() == (0, 1)  # started by another launcher
    monkeypatch.setenv(LOCAL_RANK_ENV, '1')
    monkeypatch.setenv(LOCAL_SIZE_ENV, '2')
    assert _local_placement() == (1, 2)
    for rank, size in (('2', '2'), ('x', '2'), ('0', '0')):
        monkeypatch.setenv(LOCAL_RANK_ENV, rank)
        monkeypatch.setenv(LOCAL_SIZE_ENV, size)
        with pytest.raises(DistributedError, match='OPENAFF_LOCAL'):
            _local_placement()


def test_the_launcher_tells_each_worker_its_place_on_its_host():
    assert local_placements(['a', 'b', 'a', 'a']) == [(0, 3), (0, 1), (1, 3), (2, 3)]
    workers = [p for p in build_processes(['true'], 3, 1) if p.role == 'worker']
    assert [(p.env['OPENAFF_LOCAL_RANK'], p.env['OPENAFF_LOCAL_SIZE']) for p in workers] == [
        ('0', '3'), ('1', '3'), ('2', '3')]
    # round-robin over two hosts (the server takes the first slot); aliases of this machine
    # count as one host, and the remote host's variables travel in its ssh command line
    processes = build_processes(['true'], 4, 1, hosts=['localhost', 'node-b.invalid',
                                                       '127.0.0.1'])
    workers = [p for p in processes if p.role == 'worker']
    assert [(p.host, p.env['OPENAFF_LOCAL_RANK'], p.env['OPENAFF_LOCAL_SIZE'])
            for p in workers] == [('node-b.invalid', '0', '2'), ('localhost', '0', '2'),
                                  ('localhost', '1', '2'), ('node-b.invalid', '1', '2')]
    remote = workers[0].argv()[-1]
    assert 'OPENAFF_LOCAL_RANK=0' in remote and 'OPENAFF_LOCAL_SIZE=2' in remote
    assert all('OPENAFF_LOCAL_RANK' not in p.env for p in processes if p.role != 'worker')


# ---------------------------------------------------------------- steps
def test_the_step_divides_by_the_global_batch():
    assert Cluster().step_size(32) == 32
    assert Cluster('dist_sync', 0, 4).step_size(32) == 128
    assert Cluster('dist_device_sync', 0, 2).step_size(32) == 64
    assert horovod_cluster(size=3).step_size(32) == 96
    assert Cluster('dist_async', 0, 4).step_size(32) == 32  # each worker's step on its own


class FakeHorovod:
    """``horovod.mxnet`` with ``size`` ranks whose other ranks hold exactly this rank's
    gradients, and whose rank 0 holds ``rank0`` (name -> array) for broadcasts."""
    Sum = 'sum'

    def __init__(self, size=2, rank0=None):
        self._size, self.rank0 = size, rank0 or {}
        self.reduced, self.broadcast = [], []

    def size(self):
        return self._size

    def allreduce_(self, tensor, op=None, name=None, priority=0):
        assert op == self.Sum
        self.reduced.append((name, tensor.context))
        tensor *= self._size
        return tensor

    def broadcast_(self, tensor, root_rank, name=None):
        assert root_rank == 0
        self.broadcast.append((name, tensor.context))
        tensor[:] = self.rank0[name]
        return tensor


def small_net():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, 3, padding=1), gluon.nn.Activation('relu'),
            gluon.nn.GlobalAvgPool2D(), gluon.nn.Dense(3))
    return net


def one_step(net, contexts, cluster, images, targets, tmp_path):
    engine = classifier_engine(net, Recipe(lr=0.5, momentum=0.9, wd=1e-3), contexts, [], [], 3,
                               'small', str(tmp_path), cluster=cluster)
    data = gluon.utils.split_and_load(images, contexts)
    soft = gluon.utils.split_and_load(targets, contexts)
    engine.update(data, soft, images.shape[0])
    mx.nd.waitall()
    return engine


def test_horovod_trainer_sums_every_device_of_every_rank(tmp_path):
    """Two ranks holding the same two-device batch step exactly as one device with that
    batch: the device gradients are summed, all-reduced once on the first device, and every
    device applies the same step (horovod.mxnet's DistributedTrainer reduces only the first
    device's gradient)."""
    rng = np.random.RandomState(0)
    images = mx.nd.array(rng.normal(size=(6, 2, 5, 5)))
    targets = mx.nd.array(np.eye(3)[rng.randint(0, 3, 6)])
    reference = small_net()
    reference.initialize(mx.init.Xavier(), ctx=mx.cpu())
    reference(images)
    path = str(tmp_path / 'init.params')
    reference.save_parameters(path)
    one_step(reference, [mx.cpu()], Cluster(), images, targets, tmp_path / 'ref')

    net = small_net()
    net.load_parameters(path, ctx=DEVICES)
    hvd = FakeHorovod(size=2)
    engine = one_step(net, DEVICES, horovod_cluster(hvd=hvd), images, targets, tmp_path / 'h')
    assert isinstance(engine.trainer, HorovodTrainer)
    assert {ctx for _, ctx in hvd.reduced} == {DEVICES[0]}
    assert len(hvd.reduced) == len(list(net.collect_params().values()))
    for (name, expected), param in zip(reference.collect_params().items(),
                                       net.collect_params().values()):
        copies = [c.asnumpy() for c in param.list_data()]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=name)
        np.testing.assert_allclose(copies[0], expected.data().asnumpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_horovod_broadcast_reaches_every_device_also_after_deferred_init():
    net = small_net()
    net.initialize(mx.init.Xavier(), ctx=DEVICES)  # shapes unknown until the first forward
    shapes = {'0.weight': (4, 2, 3, 3), '0.bias': (4,), '3.weight': (3, 4), '3.bias': (3,)}
    names = {n: f'openaff.parameter.{p.name}'
             for n, p in net._collect_params_with_prefix().items()}
    rank0 = {names[n]: mx.nd.full(shape, i + 1.0) for i, (n, shape) in enumerate(shapes.items())}
    hvd = FakeHorovod(rank0=rank0)
    horovod_cluster(hvd=hvd).broadcast_parameters(net)
    # the biases' shapes are known; the weights' wait for the input's
    assert sorted(name for name, _ in hvd.broadcast) == sorted(
        names[n] for n in shapes if n.endswith('bias'))
    net(mx.nd.ones((2, 2, 5, 5), ctx=DEVICES[0]))
    assert sorted(name for name, _ in hvd.broadcast) == sorted(rank0)
    for n, param in net._collect_params_with_prefix().items():
        for copy in param.list_data():
            np.testing.assert_array_equal(copy.asnumpy(), rank0[names[n]].asnumpy())
    net(mx.nd.ones((2, 2, 5, 5), ctx=DEVICES[0]))
    assert len(hvd.broadcast) == len(shapes)  # once only


def test_horovod_broadcast_of_initialised_parameters():
    net = small_net()
    net.initialize(mx.init.Xavier(), ctx=DEVICES)
    net(mx.nd.ones((1, 2, 5, 5), ctx=DEVICES[1]))
    rank0 = {f'openaff.parameter.{p.name}': mx.nd.full(p.shape, 7.0)
             for p in net.collect_params().values()}
    hvd = FakeHorovod(rank0=rank0)
    horovod_cluster(hvd=hvd).broadcast_parameters(net)
    assert {ctx for _, ctx in hvd.broadcast} == {DEVICES[0]}
    for param in net.collect_params().values():
        for copy in param.list_data():
            assert (copy.asnumpy() == 7.0).all()
    Cluster().broadcast_parameters(net)  # one process: nothing to do
    horovod_cluster(size=1, hvd=FakeHorovod(size=1)).broadcast_parameters(net)
