"""Pieces shared by the CIFAR and ImageNet networks."""
import numbers

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import HybridBlock, nn

from ..blocks import AFFResNeXtBlock
from ..fusion import graph_mode
from ..fusion.graphs import DeviceGraphs


def check_numbers(layers, classes, start_layer, widths=()):
    """``ValueError`` for numbers a network cannot be built from (before any layer is)."""
    def positive(value):
        return isinstance(value, numbers.Integral) and value >= 1
    if not layers or not all(positive(n) for n in layers):
        raise ValueError(f'layers must be positive block counts per stage, got {layers!r}')
    if not positive(classes):
        raise ValueError(f'classes must be a positive int, got {classes!r}')
    if not (isinstance(start_layer, numbers.Integral) and 1 <= start_layer <= len(layers)):
        raise ValueError(f'start_layer must be a stage from 1 to {len(layers)}, got '
                         f'{start_layer!r}')
    if not all(positive(w) for w in widths):
        raise ValueError(f'channel widths must be positive ints, got {list(widths)!r}')


class FusionNetwork(DeviceGraphs, HybridBlock):
    """A network of fusion blocks that checks the layout of the batches it is given (an
    NDArray batch of the wrong layout would otherwise reach MXNet's BatchNorm, which can abort
    the process on it). ``min_input_size`` is the smallest spatial side its strides allow.

    Hybridized, it traces its graphs for the device and dtype of its batches and again when
    they change (after ``reset_ctx`` or ``cast``); its ``export()``, and what AMP's
    ``convert_hybrid_block`` converts, is a graph of standard MXNet operators only
    (:class:`~openaff.fusion.graphs.DeviceGraphs`)."""

    min_input_size = 1

    # One graph per mode when hybridized: calls that neither record gradients nor train run
    # a graph traced inside graph_mode('inference'), whose MS-CAM selections are one fused
    # operator each with the BatchNorms folded (see openaff.fusion.graph_mode); the other
    # calls run the graph for any use. Each keeps its own CachedOp (and static memory).
    def _call_cached_op(self, *args):
        mode = 'any' if autograd.is_recording() or autograd.is_training() else 'inference'
        if mode == 'inference' and not self._has_graph(mode) and any(
                p._data is None for p in self.collect_params().values()):
            self._infer_shapes(args)  # the folded graph needs them when it is traced
        return self._run_in_mode(mode, args)

    def _infer_shapes(self, args):
        """Deferred initialisation from the general graph's shapes, without running it."""
        self._switch_graph('any')
        with graph_mode('any'):
            self._deferred_infer_shape(*args)
        for param in self.collect_params().values():
            if param._data is None:
                param._finish_deferred_init()

    # what one mode's graph is made of, swapped in and out as a whole
    _GRAPH_STATE = ('_cached_graph', '_cached_op', '_cached_op_args', '_device_graph')
    _NO_GRAPH = ((), None, [], ())

    def _has_graph(self, mode):
        if getattr(self, '_graph_mode', None) == mode:
            return self._cached_op is not None
        return self._mode_graphs.get(mode, self._NO_GRAPH)[1] is not None

    def _switch_graph(self, mode):
        current = getattr(self, '_graph_mode', None) or 'any'  # None: built by optimize_for
        if mode != current:
            graphs = self._mode_graphs
            graphs[current] = tuple(getattr(self, name) for name in self._GRAPH_STATE)
            for name, value in zip(self._GRAPH_STATE, graphs.pop(mode, self._NO_GRAPH)):
                setattr(self, name, value)
        self._graph_mode = mode

    def _run_in_mode(self, mode, args):
        self._switch_graph(mode)
        with graph_mode(mode):
            return super()._call_cached_op(*args)

    def _clear_cached_op(self):
        super()._clear_cached_op()
        self._mode_graphs, self._graph_mode = {}, None

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            self._check_input(x.shape)
        return super().forward(x, *args)

    def _first_conv_channels(self):
        # looked up once, not per batch; kept in a tuple so that Block does not register it
        if getattr(self, '_first_conv', None) is None:
            self._first_conv = tuple(p for p in self.collect_params().values()
                                     if p.name.endswith('weight') and len(p.shape) == 4)[:1]
        return (self._first_conv[0].shape[1] or None) if self._first_conv else None

    def _check_input(self, shape):
        if len(shape) != 4:
            raise ValueError(f'{type(self).__name__} takes a batch (N, C, H, W); got shape '
                             f'{shape}')
        channels = self._first_conv_channels()
        if channels and shape[1] != channels:
            hint = ('; it looks channels-last: use x.transpose((0, 3, 1, 2))'
                    if shape[3] == channels else '')
            raise ValueError(f'{type(self).__name__} takes (N, {channels}, H, W) batches '
                             f'(channels first); got {shape}{hint}')
        if min(shape[2:]) < self.min_input_size:
            raise ValueError(f'{type(self).__name__} needs inputs of at least '
                             f'{self.min_input_size}x{self.min_input_size}; got {shape}')


def stage_fusion(askc_type, stage_index, start_layer):
    """Stages before ``start_layer`` add plainly, as in the original networks."""
    return 'DirectAdd' if stage_index < start_layer else askc_type


def resnext_stages(askc_type, start_layer, layers, width, cardinality, bottleneck_width,
                   avg_down, **block_kwargs):
    """The stages of a fusion ResNeXt, one ``stageN_`` sequence of ``AFFResNeXtBlock`` per
    entry of ``layers`` (stages before ``start_layer`` add plainly): ``width`` channels,
    doubling per stage; each stage's first block projects, with stride 2 after the first
    stage. ``avg_down`` holds one flag per stage (its projection average-pools);
    ``block_kwargs`` go to every block. Made one at a time, in order, as the caller adds them."""
    for index, num_blocks in enumerate(layers):
        layer = nn.HybridSequential(prefix='stage%d_' % (index + 1))
        with layer.name_scope():
            for block_index in range(num_blocks):
                first = block_index == 0
                layer.add(AFFResNeXtBlock(
                    stage_fusion(askc_type, index + 1, start_layer), width, cardinality,
                    bottleneck_width, (1 if index == 0 else 2) if first else 1, first,
                    avg_down=avg_down[index], prefix='', **block_kwargs))
        yield layer
        width *= 2


def deep_stem_layers(stem_width, first_stride, norm_layer, norm_kwargs, trailing_norm):
    """ResNet-C stem: conv3x3(w, stride)-BN-ReLU-conv3x3(w)-BN-ReLU-conv3x3(2w)[-BN-ReLU]."""
    layers = []
    for index, (width, stride) in enumerate([(stem_width, first_stride), (stem_width, 1),
                                             (stem_width * 2, 1)]):
        if index:
            layers += [norm_layer(**norm_kwargs), nn.Activation('relu')]
        layers.append(nn.Conv2D(width, kernel_size=3, strides=stride, padding=1, use_bias=False))
    if trailing_norm:
        layers += [norm_layer(**norm_kwargs), nn.Activation('relu')]
    return layers



def update_input_stats(norm, x, momentum=0.9):
    """Moving-average update of an input BatchNorm's statistics from the batch ``x``, as mxnet's
    BatchNorm backward does for every other BatchNorm (biased variance, ``momentum`` 0.9).

    In mxnet 1.9.1 (CPU, and the same kernel contract elsewhere) the running mean/var of a
    BatchNorm are written by its *backward* pass. The input BatchNorm(scale=False, center=False)
    of the CIFAR ResNet has no learnable parameter and its input needs no gradient, so autograd
    prunes its backward and the original network never updated its statistics (they stayed 0/1
    and inference-mode accuracy collapsed). Its gamma and beta cannot be given a gradient
    (Gluon marks them non-differentiable), so the update is done here, on the NDArray input.

    The statistics are computed in the dtype of the running statistics, not of ``x``: those
    of a float16 network stay float32 (Gluon's ``BatchNorm.cast`` keeps them so, as mxnet's
    BatchNorm operator expects), and a float16 reduction would overflow.
    """
    with autograd.pause():  # a statistics update, not part of what is differentiated
        # mxnet's mean accumulates in its input's type (broadcast_reduce_op.h,
        # ReduceAxesCompute: safe_acc false): the 131072 float16 values per channel of a
        # CIFAR batch of 128 sum past 65504, to inf or NaN. A float32 input is not copied.
        wide = x.astype(norm.running_mean.dtype, copy=False)
        # channels first, then one contiguous reduction per channel: 2.4x faster than
        # reducing over the axes (0, 2, 3) in place (3.2 against 7.7 ms per CIFAR batch of 64)
        rows = wide.swapaxes(0, 1).reshape((0, -1))
        mean = rows.mean(axis=1)
        var = (rows - mean.reshape((-1, 1))).square().mean(axis=1)
        for param, batch_value in ((norm.running_mean, mean), (norm.running_var, var)):
            current = param.data(x.context)
            current[:] = momentum * current + (1 - momentum) * batch_value
