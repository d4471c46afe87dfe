"""The parametric core of the fusion blocks of *Attentional Feature Fusion* (Dai et al.,
WACV 2021, arXiv:2009.14082).

Every block is a Gluon ``HybridBlock`` called as ``block(x, residual)`` that returns one tensor of
``x``'s shape, a configuration of :class:`AttentionalFusion`:

* **context branches** -- point-wise (1x1) conv/BN stacks, either at full resolution (local
  context) or after global average pooling (global context), with a bottleneck ratio ``r``;
* **stages** -- each stage sums (or concatenates) some branches, turns the result into weights
  with a sigmoid, and combines ``x`` and ``residual`` with a **rule** (soft selection, gated
  add...).
  A second stage that looks at the first stage's output gives the *iterative* variants (iAFF).

Paper names: ``MS-CAM`` is ``M(X) = sigmoid(L(X) + G(X))`` (Sec. 3.2); the named configurations
of the original code are in :mod:`openaff.fusion.catalog`.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from . import native
from .graphs import DeviceGraphs, Target, declared_target, portable

__all__ = ['AttentionalFusion', 'Stage', 'GlobalAvgPool', 'global_pooling', 'use_global_pooling',
           'context_branch',
           'concat_channels', 'implementation', 'current_implementation', 'exportable',
           'graph_mode', 'native_path', 'GRAPH_MODES', 'IMPLEMENTATIONS', 'POOLINGS',
           'COMBINE_RULES', 'SOURCES']

def context_branch(prefix: str, widths: Sequence[int], pooled: bool = False, groups: int = 1,
                   out_act: str | None = None, head: Sequence[nn.HybridBlock] = ()):
    """Build a point-wise context branch as a ``HybridSequential``.

    Layout: ``[GlobalAvgPool] conv1x1 BN (ReLU conv1x1 BN)* [out_act]``, one conv per entry
    of ``widths``. ``pooled=True`` gives the global-context branch of MS-CAM, ``pooled=False``
    the local (point-wise) one; ``groups`` makes the convolutions depth-wise.
    """
    branch = nn.HybridSequential(prefix=prefix)
    with branch.name_scope():
        for layer in head:
            branch.add(layer)
        if pooled:
            branch.add(GlobalAvgPool())
        for index, width in enumerate(widths):
            if index:
                branch.add(nn.Activation('relu'))
            branch.add(nn.Conv2D(width, kernel_size=1, strides=1, padding=0, groups=groups))
            branch.add(nn.BatchNorm())
        if out_act:
            branch.add(nn.Activation(out_act))
    return branch


@contextmanager
def _setting(variable, value, choices, what):
    """``variable`` set to ``value`` (one of ``choices``) for the ``with`` block."""
    if value not in choices:
        raise ValueError(f'{what} must be one of {choices}, got {value!r}')
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


POOLINGS = ('adaptive', 'operator')
_POOLING = contextvars.ContextVar('openaff_global_pooling', default='adaptive')


@contextmanager
def global_pooling(kind):
    """Build the global context branches (:class:`GlobalAvgPool`) made in this context with
    ``'adaptive'`` pooling (the default) or MXNet's ``'operator'`` (oneDNN on CPU)."""
    with _setting(_POOLING, kind, POOLINGS, 'global pooling'):
        yield


def use_global_pooling(block, kind):
    """Set how every :class:`GlobalAvgPool` inside ``block`` pools in the graphs traced from
    now on: ``'adaptive'`` or MXNet's ``'operator'``; returns how many were set. A network
    whose fused maps are small (ImageNet's 14x14 and 7x7, which oneDNN pools back quickly)
    calls it at the end of its constructor."""
    if kind not in POOLINGS:
        raise ValueError(f'global pooling must be one of {POOLINGS}, got {kind!r}')
    pools = [b for b in _descendants(block) if isinstance(b, GlobalAvgPool)]
    for pool in pools:
        pool._adaptive = kind == 'adaptive'
    return len(pools)


def _descendants(block):
    yield block
    for child in block._children.values():
        yield from _descendants(child)


class GlobalAvgPool(nn.GlobalAvgPool2D):
    """Global average pooling of a context branch, by default as MXNet's adaptive pooling to
    1x1 (see :func:`global_pooling`).

    oneDNN's average-pooling backward over a whole map is the slowest operator of an AFF
    training step on CPU at CIFAR sizes when its input is in a convolution's blocked layout: up
    to 616 ms for one 64x64x32x32 map inside AFF-ResNet-32, 2/3 of the step
    (docs/performance.md, CIFAR). ``contrib.AdaptiveAvgPooling2D`` computes the same mean and
    the same ``dy / (H*W)`` gradient with MXNet's own kernels, 3-50 times faster in the
    backward; on the training fixtures its outputs and gradients are bit-identical to
    ``Pooling``'s. Its forward is slower, though: the ImageNet networks, whose 14x14 and 7x7
    maps oneDNN pools back quickly, use the operator (AFF-ResNet-50 inference 6 % faster) in
    the graphs they run on a device. Graphs for export use the operator too (ONNX's
    GlobalAveragePool).

    Portable graphs (traced for no declared device, see :mod:`~.graphs`: what Gluon's
    ``export()`` writes and AMP's ``convert_hybrid_block`` converts) always pool adaptively.
    MXNet 1.9.1's bfloat16 conversion mistypes a ``Pooling`` whose input another consumer,
    visited first, already reads in bfloat16 (the local branch's convolution here): it leaves
    the pooled map float32 but the next convolution's weights bfloat16, and the conversion
    fails at the branches' ``broadcast_add``. Adaptive pooling, a float32 operator in both AMP
    lists, gets its own casts."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._adaptive = _POOLING.get() == 'adaptive'

    def hybrid_forward(self, F, x):
        if _EXPORTABLE.get() or not (self._adaptive or portable(F)):
            return super().hybrid_forward(F, x)
        return F.contrib.AdaptiveAvgPooling2D(x, output_size=1)


def concat_channels(F, a, b):
    """``concat([a, b], dim=1)`` for two maps of one shape, via stack + reshape: oneDNN's
    concat backward crashes (SIGFPE) on narrow maps such as 4-channel branches in mxnet 1.9.1.
    Graphs built for export (:func:`exportable`) use ``concat``: the ONNX exporter has no
    conversion of the special reshape codes, and an exported graph runs no backward."""
    if _EXPORTABLE.get():
        return F.concat(a, b, dim=1)
    return F.reshape(F.stack(a, b, axis=1), shape=(0, -3, -2))


_EXPORTABLE = contextvars.ContextVar('openaff_exportable_graph', default=False)


@contextmanager
def exportable():
    """Build graphs from standard operators only, for :mod:`openaff.apps.export` (ONNX): no fused
    native operator, ``concat`` for channel concatenation, the pooling operator. Combine with
    ``implementation('fast')``. (Gluon's ``export()`` of a zoo network or fusion block needs
    none of this: it writes the portable graph, see :mod:`~.graphs`.)"""
    token = _EXPORTABLE.set(True)
    try:
        yield
    finally:
        _EXPORTABLE.reset(token)


GRAPH_MODES = ('any', 'inference')
_GRAPH_MODE = contextvars.ContextVar('openaff_graph_mode', default='any')


@contextmanager
def graph_mode(mode):
    """Declare what the symbolic graphs traced in this context will run: ``'any'`` (the
    default: training, inference, gradients) or ``'inference'`` only (no gradient, BatchNorms
    on their running statistics). Inference graphs compute each MS-CAM soft selection with
    one fused native operator (``openaff_mscam_select``: BatchNorms folded into the 1x1
    convolutions, pooling, both branches and the selection in two passes over the maps).
    The networks of :mod:`openaff.models` trace a graph per mode by themselves
    (``FusionNetwork``); a network of your own that hybridizes must only declare
    ``'inference'`` around a graph it will never train, traced after a first forward (before
    it the parameters have no shapes to fold, and the blocks keep the general form) and for
    a CPU float32 target (:func:`~.graphs.graph_target`: no other graph holds the fused
    operators)."""
    with _setting(_GRAPH_MODE, mode, GRAPH_MODES, 'graph mode'):
        yield


def inference_only(F):
    """Whether the symbolic graph being traced will only run inference, as declared by
    :func:`graph_mode`. Imperative calls always take the general path: one block then gives
    the same numbers on its first call (whose parameters have no shapes yet, so nothing can
    be folded) as on every later one."""
    return F is mx.symbol and _GRAPH_MODE.get() == 'inference'


IMPLEMENTATIONS = ('native', 'fast', 'reference')
# a context variable, so that threads and asyncio tasks building graphs do not see each other's
_IMPLEMENTATION = contextvars.ContextVar('openaff_fusion_implementation', default='native')


@contextmanager
def implementation(name):
    """Build graphs (first forward after ``hybridize``, or every imperative call) with one
    fusion algebra, e.g. to measure what the faster ones gain. All agree to float32 round-off.

    * ``'native'`` (default): AFF's soft selection as one fused C++ operator
      (:mod:`openaff.ops`) in imperative calls on CPU float32 arrays and in graphs traced for
      a CPU float32 target (see :func:`native_path`), the ``'fast'`` algebra elsewhere;
    * ``'fast'``: the fewest plain MXNet operators;
    * ``'reference'``: the original code's straightforward algebra.
    """
    with _setting(_IMPLEMENTATION, name, IMPLEMENTATIONS, 'implementation'):
        yield


def current_implementation():
    """The fusion algebra graphs are built with now (see :func:`implementation`)."""
    return _IMPLEMENTATION.get()


def _fast():
    return _IMPLEMENTATION.get() != 'reference'


def native_path(F, *arrays):
    """Whether the forward being built now may use the fused C++ operators: the one place
    that decides. Only with the ``'native'`` implementation, outside :func:`exportable`, with
    the library loaded, and for a CPU float32 target without AMP: for an imperative call, the
    target of its ``arrays``; for a symbolic trace, the target declared for it
    (:func:`~.graphs.graph_target`, or a :class:`~.graphs.DeviceGraphs` block's own). A graph
    traced with no target declared is portable: standard operators only."""
    if _IMPLEMENTATION.get() != 'native' or _EXPORTABLE.get():
        return False
    target = declared_target() if F is mx.symbol else Target.of(arrays)
    return target is not None and target.native and native.available()


def sigmoid(F, z):
    # Activation(sigmoid) runs as a oneDNN eltwise op; the plain sigmoid op is several times
    # slower on CPU
    return F.Activation(z, act_type='sigmoid') if _fast() else F.sigmoid(z)


def select(F, x, y, w, scale):
    """Soft selection ``scale * (x*w + y*(1-w))``. The fast form ``scale * (y + w*(x-y))``
    makes three passes over the maps instead of six, all with plain-layout operators: an
    oneDNN ``elemwise_add`` in the middle would hand the next operator a blocked-layout array
    to reorder again."""
    if _fast():
        blend = F.broadcast_add(y, F.broadcast_mul(w, F.broadcast_sub(x, y)))
        return blend if scale == 1 else scale * blend
    if scale == 1:
        return F.broadcast_mul(x, w) + F.broadcast_mul(y, 1 - w)
    return scale * F.broadcast_mul(x, w) + scale * F.broadcast_mul(y, 1 - w)


def _x_plus_gated_y(F, x, y, w, scale):
    return F.broadcast_mul(w, y) + x


def _y_plus_gated_x(F, x, y, w, scale):
    return y + F.broadcast_mul(w, x)


def _gated_sum(F, x, y, w, scale):
    return F.broadcast_mul(w, x + y)


COMBINE_RULES = {
    'select': select,          # AFF: w*X + (1-w)*Y
    'x+wy': _x_plus_gated_y,    # X + A*Y
    'y+wx': _y_plus_gated_x,    # Y + A*X
    'w(x+y)': _gated_sum,       # A*(X+Y)
}

SOURCES = ('sum', 'x', 'concat')


@dataclass(frozen=True)
class Stage:
    """One attention step: merge ``branches`` (by ``merge``), optional ``post`` branch,
    sigmoid, then combine ``x`` and ``residual`` with ``rule`` (see ``COMBINE_RULES``)."""
    branches: tuple
    rule: str = 'select'
    scale: int = 2
    merge: str = 'add'
    post: str | None = None


class AttentionalFusion(DeviceGraphs, HybridBlock):
    """Parametric core of the MS-CAM fusion family (Dai et al., WACV 2021).

    Hybridized on its own, it traces its graphs for the device and dtype of its inputs
    (:class:`~.graphs.DeviceGraphs`); inside another network, for the target that network
    declares, if any (:func:`native_path`).

    Parameters
    ----------
    branches : list of (attribute name, dict of :func:`context_branch` arguments)
        Registered in this order, which is the order of the checkpoint keys.
    stages : list of :class:`Stage`
        Applied in turn; the first looks at ``source``, each later one at the previous output.
    source : {'sum', 'x', 'concat'}
        What the first stage attends to: ``x + residual``, ``x`` alone, or their concatenation.
    pre : str, optional
        Name of a branch applied to the source before the first stage.
    return_weight : bool
        Return the last attention weights instead of the fused tensor (original ``asBackbone``).
    """

    def __init__(self, branches, stages, source='sum', pre=None, return_weight=False, **kwargs):
        super().__init__(**kwargs)
        if source not in SOURCES:
            raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
        for stage in stages:
            if stage.rule not in COMBINE_RULES:
                raise ValueError(f'unknown combine rule {stage.rule!r}; '
                                 f'valid: {list(COMBINE_RULES)}')
            if stage.merge == 'concat' and len(stage.branches) != 2:
                raise ValueError('merge="concat" takes exactly two branches (local, global)')
        self._stages = tuple(stages)
        self._source = source
        self._pre = pre
        self._return_weight = return_weight
        pooled = {name: spec.get('pooled', False) for name, spec in branches}
        self._fused_pairs = [native.local_global_pair(stage, pooled) for stage in stages]
        if return_weight and self._fused_pairs:
            self._fused_pairs[-1] = None  # the weights themselves are the output
        specs = dict(branches)
        self._foldable = bool(self._fused_pairs) and all(
            pair and all(native.mlp_branch(specs[name]) for name in pair)
            for pair in self._fused_pairs)
        # the maps' channel count the weights are built for: the output width of the first
        # stage's branches (None where a stage ends in another block)
        first = specs.get(stages[0].branches[0], {}) if stages else {}
        self._channels = first.get('widths', (None,))[-1] if stages and not stages[0].post \
            else None
        with self.name_scope():
            for name, spec in branches:
                setattr(self, name, context_branch(name, **spec))

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):
            self._check_maps(x, *args)
        return super().forward(x, *args)

    def _check_maps(self, x, residual=None, *rest):
        """``ValueError`` naming the inputs for maps the block was not built for, before an
        operator fails on a tensor of its own."""
        name = type(self).__name__
        if x.ndim != 4:
            raise ValueError(f'{name} fuses (N, C, H, W) maps; got x of shape {x.shape}')
        if isinstance(residual, mx.nd.NDArray) and residual.shape != x.shape:
            raise ValueError(f'{name} fuses two maps of one shape; got x {x.shape} and '
                             f'residual {residual.shape}')
        if self._channels and x.shape[1] != self._channels:
            raise ValueError(f'{name} was built for maps of {self._channels} channels; got x '
                             f'{x.shape}')

    def _attention_source(self, F, x, residual):
        if self._source == 'sum':
            return x + residual
        if self._source == 'x':
            return x
        return concat_channels(F, x, residual)

    def _weight(self, F, stage, source):
        features = [getattr(self, name)(source) for name in stage.branches]
        if stage.merge == 'concat':
            # the global branch is 1x1: expand it to the local map before concatenating
            merged = concat_channels(F, features[0], F.broadcast_like(features[1], features[0]))
        else:
            merged = features[0]
            for feature in features[1:]:
                merged = F.broadcast_add(merged, feature)
        if stage.post:
            merged = getattr(self, stage.post)(merged)
        return sigmoid(F, merged)

    def attention_weights(self, x, residual):
        """The attention weights of every stage (MS-CAM's ``sigmoid(L + G)``; two for iAFF) for
        NDArray inputs, in the reference algebra: what :mod:`openaff.apps.cam` draws."""
        import mxnet as mx
        source = self._attention_source(mx.nd, x, residual)
        if self._pre:
            source = getattr(self, self._pre)(source)
        weights = []
        for stage in self._stages:
            weights.append(self._weight(mx.nd, stage, source))
            source = COMBINE_RULES[stage.rule](mx.nd, x, residual, weights[-1], stage.scale)
        return weights

    def hybrid_forward(self, F, x, residual):
        source = self._attention_source(F, x, residual)
        if self._pre:
            source = getattr(self, self._pre)(source)
        if any(self._fused_pairs) and native_path(F, x, residual):
            if self._foldable and inference_only(F):
                folded = self._folded_forward(F, x, residual, source)
                if folded is not None:
                    return folded
            return self._native_forward(F, x, residual, source)
        for stage in self._stages:
            weight = self._weight(F, stage, source)
            source = COMBINE_RULES[stage.rule](F, x, residual, weight, stage.scale)
        return weight if self._return_weight else source

    def _native_forward(self, F, x, residual, source):
        """The stages with the fused operator where they are soft selections. The operator
        needs plain-layout maps: x and the residual are converted once for all stages.

        Each stage's global branch pools its source with MXNet's pooling operator, as the
        original does. Handing iAFF's second stage a mean computed by the operator instead
        was tried: in the ill-conditioned steps of training (BatchNorm over the pooled maps of
        a small batch) that one different rounding moved gradients 500 times the original's
        own float32 error away from its float64 gradients (docs/development.md, training
        parity)."""
        plain = None
        for stage, pair in zip(self._stages, self._fused_pairs):
            if not pair:
                weight = self._weight(F, stage, source)
                source = COMBINE_RULES[stage.rule](F, x, residual, weight, stage.scale)
                continue
            local, glob = (getattr(self, name)(source) for name in pair)
            plain = plain or (native.plain_copy(F, x), native.plain_view(F, residual))
            source = F.openaff_soft_select(native.plain_copy(F, local), glob, plain[0], plain[1],
                                           scale=stage.scale)
        return weight if self._return_weight else source

    def _folded_forward(self, F, x, residual, source):
        """Inference only: every stage as one ``openaff_mscam_select`` (BatchNorms on running
        statistics folded into the convolutions), or None where its inputs cannot be folded."""
        plain = (native.plain_copy(F, x), native.plain_view(F, residual))
        sum_source = self._source == 'sum' and not self._pre
        if not sum_source:
            source = plain[0] if self._source == 'x' and not self._pre else \
                native.plain_copy(F, source)
        for stage, pair in zip(self._stages, self._fused_pairs):
            (local, local_eps), (glob, glob_eps) = (native.branch_inputs(getattr(self, name))
                                                    for name in pair)
            if local is None or glob is None or len(local_eps | glob_eps) != 1:
                return None  # not foldable: the operator takes one epsilon
            lead = plain if sum_source else (source, *plain)
            source = F.openaff_mscam_select(*lead, *local, *glob, scale=stage.scale,
                                            sum_source=sum_source, eps=min(local_eps))
            sum_source = False
        return source
