"""BatchNorm statistics: precise re-estimation and per-branch momentum; SyncBatchNorm.

Short or small-batch runs of AFF/iAFF networks evaluate badly in inference mode: the
BatchNorms of the attention branches (the global one normalises 1x1 maps, one value per sample
and channel) keep running statistics that lag the fast-moving weights. ``precise_bn`` replaces
every running mean/var by the population statistics of the current weights, estimated over
training batches, as in "Rethinking 'Batch' in BatchNorm" (Wu & Johnson, 2021, PreciseBN).
"""
from __future__ import annotations

from contextlib import contextmanager

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn

from ._gluon import all_blocks, batch_norms, forward_hooks, imperative

__all__ = ['precise_bn', 'set_bn_momentum', 'fusion_batch_norms', 'use_sync_batchnorm',
           'SyncBatchNorm']


class SyncBatchNorm(gluon.contrib.nn.SyncBatchNorm):
    """Gluon's ``SyncBatchNorm`` for float16 networks: the operator runs in float32 between
    two casts, and the output has the input's dtype, as a BatchNorm's has.

    mxnet 1.9.1's ``_contrib_SyncBatchNorm`` computes in float32 only: its kernels read the
    data, output, gamma, beta and moving statistics as ``real_t`` (float) whatever the dtype
    (``src/operator/contrib/sync_batch_norm-inl.h`` lines 277-292 forward, 360-383 backward;
    ``CreateOp`` ignores the dtype, ``sync_batch_norm.cc`` line 31), and ``TBlob::dptr`` refuses
    float16 data there ("data type do not match", ``include/mxnet/tensor_blob.h`` line 255).
    Its type inference accepts float16 data with float32 parameters (``sync_batch_norm-inl.h``
    lines 498-527), so a float16 graph type-checks and fails at its first step. Gluon's
    ``cast('float16')`` keeps every BatchNorm's parameters float32 (mxnet's BatchNorm takes
    float16 data with float32 parameters, ``batch_norm.cc`` lines 399-421), so only the data
    is cast.

    The dtype of the data is the one the layer was last ``cast`` to (a graph is traced without
    dtypes; called on NDArrays, the input's own). A float32 layer adds no operator: its graph
    is Gluon's. Under AMP the layer stays float32 and AMP casts the operator's inputs itself
    (``_contrib_SyncBatchNorm`` is in its FP32_FUNCS). :func:`use_sync_batchnorm` gives the
    layers of a network converted after its ``cast`` that network's dtype.
    """

    def cast(self, dtype):
        self._data_dtype = np.dtype(dtype).name
        super().cast(dtype)  # BatchNorm.cast: parameters float32 for float16

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        dtype = np.dtype(x.dtype).name if isinstance(x, mx.nd.NDArray) else \
            getattr(self, '_data_dtype', 'float32')
        if dtype == 'float32':
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        # Cast, not amp_cast/amp_multicast: on CPUs their oneDNN paths refuse float64
        # (amp_cast) or float16 (amp_multicast) (amp_cast.cc, AMPCastExCPU, AMPMultiCastExCPU)
        out = super().hybrid_forward(F, F.Cast(x, dtype='float32'), gamma, beta, running_mean,
                                     running_var)
        return F.Cast(out, dtype=dtype)


class _Moments:
    """Population mean/var of one BatchNorm's input, accumulated slice by slice in float64.

    :meth:`add` only queues device work (so that the slices of a batch on several devices can
    meet at a SyncBatchNorm's barrier, see :func:`precise_bn`); :meth:`flush` reads it."""

    def __init__(self):
        self.count = 0
        self.sum_mean = 0.0
        self.sum_square = 0.0
        self.pending = []

    def add(self, x):
        if np.dtype(x.dtype).itemsize < 4:
            # float16 sums of a map's values overflow (mxnet reduces in the input's type)
            x = x.astype('float32')
        axes = tuple(i for i in range(x.ndim) if i != 1)
        mean = x.mean(axis=axes)
        var = (x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))).square().mean(axis=axes)
        self.pending.append((x.size // x.shape[1], mx.nd.stack(mean, var)))

    def flush(self):
        for n, moments in self.pending:
            mean, var = moments.asnumpy().astype(np.float64)
            self.count += n
            self.sum_mean = self.sum_mean + n * mean
            self.sum_square = self.sum_square + n * (var + mean ** 2)
        self.pending = []

    def result(self):
        mean = self.sum_mean / self.count
        return mean, np.maximum(self.sum_square / self.count - mean ** 2, 0.0)


def _inputs_of(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _slices(data, contexts, dtype):
    """``data`` split over ``contexts`` along the batch axis as a training step splits it
    (uneven slices allowed; a batch smaller than the device list goes to as many devices as
    it has samples), each cast to ``dtype`` on its device."""
    if contexts is None:
        slices = [data]
    else:
        used = contexts[:max(1, min(len(contexts), data.shape[0]))]
        slices = gluon.utils.split_and_load(data, used, batch_axis=0, even_split=False)
    return [x.astype(dtype, copy=False) for x in slices] if dtype else slices


@contextmanager
def _as_plain_batchnorm(norms):
    """Make ``norms`` (SyncBatchNorms) plain BatchNorms for the block, then restore them.
    Switching the class keeps each layer's parameters and place in its parent; the network
    must run imperatively meanwhile (a cached graph keeps the operator it was traced with)."""
    saved = [(norm, norm.__class__, norm._kwargs) for norm in norms]
    for norm in norms:
        kwargs = norm._kwargs
        norm.__class__ = nn.BatchNorm
        norm._kwargs = {'axis': 1, 'eps': kwargs['eps'], 'momentum': kwargs['momentum'],
                        'fix_gamma': kwargs['fix_gamma'],
                        'use_global_stats': kwargs['use_global_stats']}
    try:
        yield
    finally:
        for norm, cls, kwargs in saved:
            norm.__class__, norm._kwargs = cls, kwargs


# Device kinds on which the slices of a batch may meet at a SyncBatchNorm's barrier. Not CPUs,
# on which mxnet 1.9.1 deadlocks (measured with a CIFAR AFF-ResNet on cpu(1), cpu(2)): each
# CPU device has one worker thread (MXNET_CPU_WORKER_NTHREADS, src/initialize.cc line 91), so
# when two branches hold SyncBatchNorms (MS-CAM's local and global ones) one device can wait at
# the first branch's barrier while the other waits at the second's; and all CPU devices share
# one pool of 4 workspaces and one parallel random generator (src/resource.cc lines 88-104,
# 128-133; one pool per GPU, lines 138-160), granted in push order, so an operator of one
# device can wait behind one of the other device's queued after its barrier. GPUs have two
# workers each (MXNET_GPU_WORKER_NTHREADS, src/common/utils.h line 509).
_SYNC_DEVICE_TYPES = ('gpu',)


def _synchronised(norm, contexts):
    """Whether the SyncBatchNorm ``norm`` can run as in training on the slices of a batch
    split over ``contexts`` (None: each batch where it is, one slice): exactly ``ndev``
    distinct devices, and devices whose workers can wait at its barrier (one needs none)."""
    ndev = norm._kwargs['ndev']
    if contexts is None:
        return ndev == 1
    return len(set(contexts)) == len(contexts) == ndev and (
        ndev == 1 or all(c.device_type in _SYNC_DEVICE_TYPES for c in contexts))


def precise_bn(net, batches, num_batches=None, ctx=None, dtype=None):
    """Re-estimate the running mean/var of every BatchNorm of ``net`` with its current weights.

    The network runs in training mode (each BatchNorm normalises with its batch statistics, as
    during training) over up to ``num_batches`` batches of ``batches`` (NDArrays, or tuples
    whose first item is the input); the input of every BatchNorm is accumulated, and its
    running mean/var are set to the population mean and (biased) variance over all those
    samples. No weight changes and no optimizer state is touched.

    ``ctx`` is where the network runs: None (each batch where it is), a context, or a list of
    contexts, over which every batch is split along its first axis as a training step splits
    it (each device holds its slice only, and plain BatchNorms normalise per device, as they
    do in training). ``dtype`` (e.g. ``'float16'`` for a float16 network) casts every slice on
    its device. The moments are reduced in float32 on the devices (float16 sums overflow) and
    accumulated in float64.

    SyncBatchNorm layers: in training, one built for ``ndev`` devices normalises with the
    statistics of the ``ndev`` slices of a batch together; its operator waits at a barrier
    until ``ndev`` devices have reached it (``sync_batch_norm-inl.h``, ``Barrier``). When the
    slices lie on ``ndev`` distinct GPUs (``ctx`` the list of devices it trains on) the layer
    runs so: every slice's forward is queued before any statistic is read, so the devices
    meet at the barriers as in a training step. Otherwise -- the batches on one device,
    another number of devices, or CPU devices, on which mxnet 1.9.1 deadlocks at the barrier
    (see ``_SYNC_DEVICE_TYPES``) -- waiting would never end, and the layer runs for the
    duration as a plain BatchNorm with the same parameters, normalising each slice with its
    own statistics. On one device that is the whole batch, whose statistics SyncBatchNorm
    computes over the slices together, so the estimate is the synchronised one; over several
    devices each slice is normalised alone, as unsynchronised training would. Either way the
    running statistics set are the population statistics over every sample of every slice.

    Returns the number of BatchNorm layers updated.
    """
    contexts = None if ctx is None else list(ctx) if isinstance(ctx, list | tuple) else [ctx]
    norms = batch_norms(net)
    moments = {id(norm): _Moments() for norm in norms}
    synced = [norm for norm in norms if isinstance(norm, gluon.contrib.nn.SyncBatchNorm)]
    unsynchronised = [norm for norm in synced if not _synchronised(norm, contexts)]
    meeting = len(synced) > len(unsynchronised) and contexts is not None and len(contexts) > 1

    def hook(block, inputs):
        moments[id(block)].add(inputs[0])

    seen = 0
    # recording keeps oneDNN's pooling in its training kind (no per-call log line); nothing is
    # differentiated
    with imperative(net), _as_plain_batchnorm(unsynchronised), \
            forward_hooks(norms, hook, pre=True), autograd.record(train_mode=True):
        for batch in batches:
            if num_batches is not None and seen >= num_batches:
                break
            data = _inputs_of(batch)
            if meeting and data.shape[0] < len(contexts):
                raise ValueError(f'precise_bn: a batch of {data.shape[0]} samples cannot be '
                                 f'split over the {len(contexts)} devices whose SyncBatchNorms '
                                 f'wait for each other')
            for x in _slices(data, contexts, dtype):
                net(x)
            # the whole batch done before the next is queued: SyncBatchNorm's barrier has no
            # generations (sync_batch_norm-inl.h, Barrier::Wait), so a device reaching a
            # layer's barrier in the next batch before the other device's worker has woken
            # from it in this one would leave both waiting (a training step cannot: its next
            # forward needs the weights updated from every device)
            mx.nd.waitall()
            for moment in moments.values():
                moment.flush()
            seen += 1
    if not seen:
        raise ValueError('precise_bn needs at least one batch')
    for norm in norms:
        mean, var = moments[id(norm)].result()
        overwrite(norm.running_mean, mean)
        overwrite(norm.running_var, var)
    return len(norms)


def overwrite(param, value):
    """Write ``value`` into every copy of ``param`` in place. ``Parameter.set_data`` would
    make a trainer that updates on a distributed kvstore (dist_async) reset it, which mxnet
    refuses."""
    for array in param.list_data():
        array[:] = mx.nd.array(np.asarray(value).reshape(param.shape), ctx=array.context,
                               dtype=array.dtype)


def fusion_batch_norms(net):
    """The BatchNorms inside fusion blocks (attention branches) of ``net``."""
    from .fusion import AttentionalFusion, ConcatFuse
    inside = []
    for block in all_blocks(net):
        if isinstance(block, (AttentionalFusion, ConcatFuse)):
            inside.extend(batch_norms(block))
    return inside


def set_bn_momentum(net, momentum, fusion_only=True):
    """Set the running-statistics momentum of the fusion blocks' BatchNorms (or of all of them
    with ``fusion_only=False``); mxnet's default is 0.9. A lower momentum lets the statistics of
    the attention branches follow their weights. Takes effect for graphs built afterwards: call
    it before ``hybridize`` (or hybridize again). Returns the number of layers changed."""
    norms = fusion_batch_norms(net) if fusion_only else batch_norms(net)
    for norm in norms:
        norm._kwargs['momentum'] = float(momentum)
    return len(norms)


def use_sync_batchnorm(net, num_devices):
    """Make every BatchNorm of ``net`` a ``SyncBatchNorm`` over ``num_devices`` devices of one
    process: batch statistics over the whole batch instead of each device's slice (Zhang et al.,
    "Context Encoding for Semantic Segmentation", CVPR 2018), which matters when the slices are
    small. Parameter names, values and running statistics are unchanged, so checkpoints load
    either way. The layers are :class:`SyncBatchNorm`, which also runs in float16 networks;
    Gluon SyncBatchNorms already there become one too, over ``num_devices``. Call it before
    ``hybridize`` (and preferably before ``cast``). Returns the number of layers changed."""
    norms = [norm for norm in batch_norms(net) if not isinstance(norm, SyncBatchNorm)]
    # a network cast before the conversion: its BatchNorms' parameters are float32 either way,
    # the data they get has its other weights' dtype
    cast_to = {np.dtype(p.dtype).name for p in net.collect_params().values()} - {'float32'}
    for norm in norms:
        kwargs = norm._kwargs
        if len(cast_to) == 1:
            norm._data_dtype = next(iter(cast_to))
        if isinstance(norm, gluon.contrib.nn.SyncBatchNorm):
            norm.__class__ = SyncBatchNorm
            norm._kwargs = dict(kwargs, ndev=int(num_devices))
            continue
        if kwargs.get('axis', 1) != 1:
            raise ValueError(f'{norm.name}: SyncBatchNorm normalises axis 1 only, '
                             f'this layer uses axis {kwargs["axis"]}')
        # SyncBatchNorm is a BatchNorm whose operator differs: switching the class in place keeps
        # the block's parameters, prefix and place in its parent
        norm.__class__ = SyncBatchNorm
        norm._kwargs = {'eps': kwargs['eps'], 'momentum': kwargs['momentum'],
                        'fix_gamma': kwargs['fix_gamma'],
                        'use_global_stats': kwargs['use_global_stats'],
                        'ndev': int(num_devices), 'key': norm.prefix}
    return len(norms)
