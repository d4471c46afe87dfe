"""BatchNorm statistics: precise re-estimation and per-branch momentum.

Short or small-batch runs of AFF/iAFF networks evaluate badly in inference mode: the
BatchNorms of the attention branches (the global one normalises 1x1 maps, one value per sample
and channel) keep running statistics that lag the fast-moving weights. ``precise_bn`` replaces
every running mean/var by the population statistics of the current weights, estimated over
training batches, as in "Rethinking 'Batch' in BatchNorm" (Wu & Johnson, 2021, PreciseBN).
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import autograd

from ._gluon import all_blocks, batch_norms, forward_hooks, imperative

__all__ = ['precise_bn', 'set_bn_momentum', 'fusion_batch_norms', 'use_sync_batchnorm']


class _Moments:
    """Population mean/var of one BatchNorm's input, accumulated batch by batch in float64."""

    def __init__(self):
        self.count = 0
        self.sum_mean = 0.0
        self.sum_square = 0.0

    def add(self, x):
        axes = tuple(i for i in range(x.ndim) if i != 1)
        n = x.size // x.shape[1]
        mean = x.mean(axis=axes)
        var = (x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))).square().mean(axis=axes)
        mean, var = mean.asnumpy().astype(np.float64), var.asnumpy().astype(np.float64)
        self.count += n
        self.sum_mean = self.sum_mean + n * mean
        self.sum_square = self.sum_square + n * (var + mean ** 2)

    def result(self):
        mean = self.sum_mean / self.count
        return mean, np.maximum(self.sum_square / self.count - mean ** 2, 0.0)


def _inputs_of(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def precise_bn(net, batches, num_batches=None, ctx=None):
    """Re-estimate the running mean/var of every BatchNorm of ``net`` with its current weights.

    The network runs in training mode (each BatchNorm normalises with its batch statistics, as
    during training) over up to ``num_batches`` batches of ``batches`` (NDArrays, or tuples
    whose first item is the input); the input of every BatchNorm is accumulated, and its
    running mean/var are set to the population mean and (biased) variance over all those
    samples. No weight changes and no optimizer state is touched.

    Returns the number of BatchNorm layers updated.
    """
    norms = batch_norms(net)
    moments = {id(norm): _Moments() for norm in norms}

    def hook(block, inputs):
        moments[id(block)].add(inputs[0])

    seen = 0
    # recording keeps oneDNN's pooling in its training kind (no per-call log line); nothing is
    # differentiated
    with imperative(net), forward_hooks(norms, hook, pre=True), autograd.record(train_mode=True):
        for batch in batches:
            if num_batches is not None and seen >= num_batches:
                break
            data = _inputs_of(batch)
            net(data if ctx is None else data.as_in_context(ctx))
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
    either way. Call it before ``hybridize``. Returns the number of layers changed."""
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    norms = [norm for norm in batch_norms(net) if not isinstance(norm, SyncBatchNorm)]
    for norm in norms:
        kwargs = norm._kwargs
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
