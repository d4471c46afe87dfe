"""Fusion blocks of *Attentional Feature Fusion* (Dai et al., WACV 2021, arXiv:2009.14082).

Every block is a Gluon ``HybridBlock`` called as ``block(x, residual)`` that returns one tensor of
``x``'s shape. All of them are configurations of one small core, :class:`AttentionalFusion`:

* **context branches** -- point-wise (1x1) conv/BN stacks, either at full resolution (local
  context) or after global average pooling (global context), with a bottleneck ratio ``r``;
* **stages** -- each stage sums (or concatenates) some branches, turns the result into weights
  with a sigmoid, and combines ``x`` and ``residual`` with a **rule** (soft selection, gated add...).
  A second stage that looks at the first stage's output gives the *iterative* variants (iAFF).

The original open-aff class names and constructor arguments are kept as thin named
configurations, and so are their child attribute names and layer order: checkpoints written with
``save_parameters`` use structural keys such as ``attention.local_att.0.weight``.

Paper names: ``MS-CAM`` is ``M(X) = sigmoid(L(X) + G(X))`` (Sec. 3.2), ``AFF`` is
:class:`ASKCFuse` and ``iAFF`` is :class:`ResGlobLocaforGlobLocaChaFuse` (Sec. 3.3).
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from . import ops

__all__ = [
    'AttentionalFusion', 'Stage', 'context_branch', 'get_fusion', 'list_fusions', 'implementation',
    'IMPLEMENTATIONS',
    'MSCAM', 'AFF', 'iAFF',
]


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
            branch.add(nn.GlobalAvgPool2D())
        for index, width in enumerate(widths):
            if index:
                branch.add(nn.Activation('relu'))
            branch.add(nn.Conv2D(width, kernel_size=1, strides=1, padding=0, groups=groups))
            branch.add(nn.BatchNorm())
        if out_act:
            branch.add(nn.Activation(out_act))
    return branch


def concat_channels(F, a, b):
    """``concat([a, b], dim=1)`` for two maps of one shape, via stack + reshape: oneDNN's
    concat backward crashes (SIGFPE) on narrow maps such as 4-channel branches in mxnet 1.9.1."""
    return F.reshape(F.stack(a, b, axis=1), shape=(0, -3, -2))


IMPLEMENTATIONS = ('native', 'fast', 'reference')
_IMPLEMENTATION = ['native']


@contextmanager
def implementation(name):
    """Build graphs (first forward after ``hybridize``, or every imperative call) with one
    fusion algebra, e.g. to measure what the faster ones gain. All agree to float32 round-off.

    * ``'native'`` (default): AFF's soft selection as one fused C++ operator
      (:mod:`openaff.ops`) on CPU float32, the ``'fast'`` algebra elsewhere;
    * ``'fast'``: the fewest plain MXNet operators;
    * ``'reference'``: the original code's straightforward algebra.
    """
    if name not in IMPLEMENTATIONS:
        raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, got {name!r}')
    previous = _IMPLEMENTATION[0]
    _IMPLEMENTATION[0] = name
    try:
        yield
    finally:
        _IMPLEMENTATION[0] = previous


def _fast():
    return _IMPLEMENTATION[0] != 'reference'


def _amp_active():
    from mxnet.contrib.amp import amp
    return bool(getattr(amp, '_amp_initialized', False))


def _native_ready(block):
    """Whether ``block``'s graph will run where the native operator exists: every parameter
    float32 on a CPU context, no AMP casting, and the library loaded."""
    if _IMPLEMENTATION[0] != 'native' or _amp_active():
        return False
    params = list(block.collect_params().values())
    try:
        on_cpu = all(ctx.device_type == 'cpu' for p in params for ctx in p.list_ctx())
    except RuntimeError:  # not initialised: no context to run on yet
        return False
    return bool(params) and on_cpu and all(np.dtype(p.dtype) == np.float32 for p in params) \
        and ops.available()


def _sigmoid(F, z):
    # Activation(sigmoid) runs as a oneDNN eltwise op; the plain sigmoid op is several times
    # slower on CPU
    return F.Activation(z, act_type='sigmoid') if _fast() else F.sigmoid(z)


def _select(F, x, y, w, scale):
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
    'select': _select,          # AFF: w*X + (1-w)*Y
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


class AttentionalFusion(HybridBlock):
    """Parametric core of the MS-CAM fusion family (Dai et al., WACV 2021).

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
                raise ValueError(f'unknown combine rule {stage.rule!r}; valid: {list(COMBINE_RULES)}')
            if stage.merge == 'concat' and len(stage.branches) != 2:
                raise ValueError('merge="concat" takes exactly two branches (local, global)')
        self._stages = tuple(stages)
        self._source = source
        self._pre = pre
        self._return_weight = return_weight
        pooled = {name: spec.get('pooled', False) for name, spec in branches}
        self._fused_pairs = [_local_global_pair(stage, pooled) for stage in stages]
        if return_weight and self._fused_pairs:
            self._fused_pairs[-1] = None  # the weights themselves are the output
        with self.name_scope():
            for name, spec in branches:
                setattr(self, name, context_branch(name, **spec))

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
        return _sigmoid(F, merged)

    def hybrid_forward(self, F, x, residual):
        source = self._attention_source(F, x, residual)
        if self._pre:
            source = getattr(self, self._pre)(source)
        if any(self._fused_pairs) and _native_ready(self):
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
            plain = plain or (_plain_copy(F, x), _plain_view(F, residual))
            source = F.openaff_soft_select(_plain_copy(F, local), glob, plain[0], plain[1],
                                           scale=stage.scale)
        return weight if self._return_weight else source


# The native operator needs plain-layout inputs. Converting oneDNN-layout arrays with MXNet
# operators (cached oneDNN reorders into planned memory) is several times faster than the
# conversion MXNet's extension-operator dispatcher makes itself.
def _plain_copy(F, value):
    """A plain-layout copy: one reorder, leaving ``value`` as it is for its other readers.
    For conv/BN outputs, which oneDNN keeps in a blocked layout."""
    return F.transpose(value, axes=(0, 1, 2, 3))


def _plain_view(F, value):
    """``value`` in plain layout, converted in place (free when it is plain already). For the
    residual, usually the plain output of the previous fusion."""
    return F.reshape(value, shape=(0, 0, 0, 0))


def _local_global_pair(stage, pooled):
    """``(local, global)`` branch names when ``stage`` is a soft selection by
    ``sigmoid(local + global)`` -- what the native operator computes -- else None."""
    if stage.rule != 'select' or stage.merge != 'add' or stage.post or len(stage.branches) != 2:
        return None
    local = [name for name in stage.branches if not pooled[name]]
    glob = [name for name in stage.branches if pooled[name]]
    return (local[0], glob[0]) if len(local) == len(glob) == 1 else None


# ---------------------------------------------------------------- branch specifications
def _mlp(channels, r, pooled=False, **extra):
    """Bottleneck branch conv(C/r) BN ReLU conv(C) BN, as in MS-CAM."""
    return dict(widths=(int(channels // r), channels), pooled=pooled, **extra)


def _linear(width, pooled=False, **extra):
    """Single conv(width) BN branch of the earlier ablation blocks."""
    return dict(widths=(width,), pooled=pooled, **extra)


def _ms_cam(channels, r, suffix='', pooled_local=False, pooled_global=True, **extra):
    """The two MS-CAM branches ``local_att{suffix}`` and ``global_att{suffix}``."""
    return [('local_att' + suffix, _mlp(channels, r, pooled=pooled_local, **extra)),
            ('global_att' + suffix, _mlp(channels, r, pooled=pooled_global, **extra))]


# ---------------------------------------------------------------- the current generation
class DirectAddFuse(HybridBlock):
    """Plain addition ``x + residual``: the baseline fusion of a residual block."""

    def hybrid_forward(self, F, x, residual):
        return x + residual


class ASKCFuse(AttentionalFusion):
    """AFF: ``Z = 2 * (M(X+Y) * X + (1 - M(X+Y)) * Y)`` with MS-CAM ``M`` (paper Sec. 3.3).

    The factor 2 is the original code's (it keeps the scale of ``X + Y``)."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r), [Stage(('local_att', 'global_att'))])


class ResGlobLocaforGlobLocaChaFuse(AttentionalFusion):
    """iAFF: a first AFF gives the initial integration ``X (+) Y`` that a second MS-CAM attends
    to: ``Z = M2(X (+) Y) * X + (1 - M2(X (+) Y)) * Y`` (paper Sec. 3.3, no factor 2).

    Both global branches are used (the PyTorch copies' bug that reuses ``global_att`` is not
    reproduced)."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r) + _ms_cam(channels, r, suffix='2'),
                         [Stage(('local_att', 'global_att'), scale=1),
                          Stage(('local_att2', 'global_att2'), scale=1)])


# ---------------------------------------------------------------- the earlier ablation catalog
class ResGlobLocaChaFuse(AttentionalFusion):
    """Single-layer local + global context (no bottleneck), soft selection x2."""

    def __init__(self, channels=64):
        super().__init__([('local_att', _linear(channels)),
                          ('global_att', _linear(channels, pooled=True))],
                         [Stage(('local_att', 'global_att'))])


class ResGlobChaFuse(AttentionalFusion):
    """Global context only (SE-like, no reduction), soft selection x2."""

    def __init__(self, channels=64, asBackbone=False):  # noqa: N803 (original name)
        super().__init__([('attention', _mlp(channels, 1, pooled=True))],
                         [Stage(('attention',))], return_weight=asBackbone)


class ResLocaChaFuse(AttentionalFusion):
    """Local (point-wise) context only, no reduction, soft selection x2."""

    def __init__(self, channels=64, asBackbone=False):  # noqa: N803 (original name)
        super().__init__([('attention', _mlp(channels, 1))],
                         [Stage(('attention',))], return_weight=asBackbone)


class ResLocaLocaChaFuse(AttentionalFusion):
    """Local + Local ablation: both MS-CAM branches at full resolution."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, pooled_global=False),
                         [Stage(('local_att', 'global_att'))])


class ResGlobGlobChaFuse(AttentionalFusion):
    """Global + Global ablation: both MS-CAM branches pooled."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, pooled_local=True),
                         [Stage(('local_att', 'global_att'))])


class ResGlobforGlobChaFuse(AttentionalFusion):
    """Iterative fusion with single-layer global context in both stages."""

    def __init__(self, channels=64):
        super().__init__([('global_att', _linear(channels, pooled=True)),
                          ('global_att2', _linear(channels, pooled=True))],
                         [Stage(('global_att',)), Stage(('global_att2',))])


class ResLocaforLocaChaFuse(AttentionalFusion):
    """Iterative fusion with single-layer local context in both stages."""

    def __init__(self, channels=64):
        super().__init__([('local_att', _linear(channels)), ('local_att2', _linear(channels))],
                         [Stage(('local_att',)), Stage(('local_att2',))])


def _single_layer_ms_cam(channels):
    return [('local_att', _linear(channels)), ('global_att', _linear(channels, pooled=True))]


class AYforXplusYAddFuse(AttentionalFusion):
    """``A(X) * Y + X``: attention from ``x`` alone gates the residual."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='x+wy')], source='x')


class XplusAYforYAddFuse(AttentionalFusion):
    """``Y + A(X) * X``: attention from ``x`` alone gates ``x``."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='y+wx')], source='x')


class AXYforXplusYAddFuse(AttentionalFusion):
    """``A(X+Y) * Y + X``."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='x+wy')])


class AXYforXYAddFuse(AttentionalFusion):
    """``A(X+Y) * (X+Y)``: channel attention on the sum."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='w(x+y)')])


class SEFuse(AttentionalFusion):
    """Squeeze-and-Excitation on ``x``: ``Y + SE(X) * X``."""

    def __init__(self, channels=64, r=4):
        super().__init__([('global_att', _mlp(channels, r, pooled=True))],
                         [Stage(('global_att',), rule='y+wx')], source='x')


class GAUFuse(AttentionalFusion):
    """Global Attention Upsample style: ``X + G(X) * Y``."""

    def __init__(self, channels=64):
        super().__init__([('global_att', _linear(channels, pooled=True))],
                         [Stage(('global_att',), rule='x+wy')], source='x')


class HalfASKCFuse(AttentionalFusion):
    """MS-CAM whose branches stop at C/r channels; a shared conv (``post``) mixes their
    concatenation back to C."""

    def __init__(self, channels=64, r=4):
        inter = int(channels // r)
        super().__init__([('local_att', _linear(inter, out_act='relu')),
                          ('global_att', _linear(inter, pooled=True, out_act='relu')),
                          ('post', _linear(channels))],
                         [Stage(('local_att', 'global_att'), merge='concat', post='post')])


class ConcatASKCFuse(AttentionalFusion):
    """MS-CAM branches (with a trailing ReLU) concatenated and mixed by a ``post`` conv."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, out_act='relu') + [('post', _linear(channels))],
                         [Stage(('local_att', 'global_att'), merge='concat', post='post')])


class DepthASKCFuse(AttentionalFusion):
    """AFF whose local branch is depth-wise (per-channel) instead of a bottleneck."""

    def __init__(self, channels=64, r=4):
        super().__init__([('local_att', _mlp(channels, 1, groups=channels)),
                          ('global_att', _mlp(channels, r, pooled=True))],
                         [Stage(('local_att', 'global_att'))])


class Depth4ASKCFuse(AttentionalFusion):
    """AFF with four depth-wise local branches summed with the global one."""

    def __init__(self, channels=64, r=4):
        locals_ = [f'local_att{i}' for i in range(1, 5)]
        super().__init__([(name, _mlp(channels, 1, groups=channels)) for name in locals_]
                         + [('global_att', _mlp(channels, r, pooled=True))],
                         [Stage(tuple(locals_) + ('global_att',))])


class AddReLUASKCFuse(AttentionalFusion):
    """AFF whose two branches end with a ReLU before being added."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, out_act='relu'),
                         [Stage(('local_att', 'global_att'))])


class LCNASKCFuse(AttentionalFusion):
    """AFF with the reduction fixed at 4 (identical layout to :class:`ASKCFuse`)."""

    def __init__(self, channels=64):
        super().__init__(_ms_cam(channels, 4), [Stage(('local_att', 'global_att'))])


class ConcatASKC(AttentionalFusion):
    """A shared conv-BN-ReLU on ``X + Y`` feeds the MS-CAM branches; a conv (``sig``) mixes
    their sum before the sigmoid."""

    def __init__(self, channels=64):
        super().__init__([('shared_att', _linear(channels, out_act='relu'))]
                         + _ms_cam(channels, 4) + [('sig', _linear(channels))],
                         [Stage(('local_att', 'global_att'), post='sig')], pre='shared_att')


class TwoConcatASKC(AttentionalFusion):
    """Attention from the concatenation ``[X, Y]``: a shared reduction (``pre_att``), local and
    global C/4 branches concatenated, and a conv (``post_att``) back to C.

    The original never ran: its forward concatenated the (B, C/4, H, W) local map with the
    (B, C/4, 1, 1) global map, which fails for any H, W > 1, and ``pre_att`` and ``post_att``
    shared one name prefix. Here the global map is broadcast to the local map's size before the
    concatenation (as the original's :class:`HalfASKCFuse` does) and the prefixes are distinct.
    Checkpoint keys are the original attribute names (``pre_att.0.weight``, ...)."""

    def __init__(self, channels=64):
        inter = int(channels // 4)
        super().__init__([('pre_att', _linear(inter, out_act='relu')),
                          ('local_att', _linear(inter, out_act='relu')),
                          ('global_att', _linear(inter, pooled=True, out_act='relu')),
                          ('post_att', _linear(channels))],
                         [Stage(('local_att', 'global_att'), merge='concat', post='post_att')],
                         source='concat', pre='pre_att')


class SKFuse(AttentionalFusion):
    """Selective Kernel style: a global branch gives 2C logits, a softmax over the pair picks
    per-channel weights ``a, b`` with ``a + b = 1``: ``Z = 2 * (a*X + b*Y)``."""

    def __init__(self, channels=64):
        super().__init__([('global_att', dict(widths=(int(channels // 4), 2 * channels),
                                              pooled=True))], [])

    def hybrid_forward(self, F, x, residual):
        logits = F.reshape(self.global_att(x + residual), (0, 2, -1, 0))  # (B, 2, C, 1)
        weights = F.softmax(logits, axis=1)
        w_x = F.reshape(F.slice_axis(weights, axis=1, begin=0, end=1), (0, -1, 1, 1))
        w_y = F.reshape(F.slice_axis(weights, axis=1, begin=1, end=2), (0, -1, 1, 1))
        return 2 * F.broadcast_mul(x, w_x) + 2 * F.broadcast_mul(residual, w_y)


class RASKCFuse(AttentionalFusion):
    """Recursive AFF: a second MS-CAM on ``L(X+Y) + G(X+Y)`` chooses between the local and
    global contexts, whose mixture gives the final weights: ``Z = w*X + (1-w)*Y``."""

    def __init__(self, channels=64):
        super().__init__(_ms_cam(channels, 4) + _ms_cam(channels, 4, suffix='2'), [])

    def hybrid_forward(self, F, x, residual):
        summed = x + residual
        local, glob = self.local_att(summed), self.global_att(summed)
        context = F.broadcast_add(local, glob)
        choice = _sigmoid(F, F.broadcast_add(self.local_att2(context), self.global_att2(context)))
        mixed = F.broadcast_add(F.broadcast_mul(local, choice), F.broadcast_mul(glob, 1 - choice))
        return _select(F, x, residual, _sigmoid(F, mixed), 1)


class ConcatFuse(HybridBlock):
    """Concatenate ``[X, Y]``, BatchNorm, then a 1x1 conv back to ``channels``."""

    def __init__(self, channels=64):
        super().__init__()
        with self.name_scope():
            self.fuse = nn.HybridSequential(prefix='fuse')
            with self.fuse.name_scope():
                self.fuse.add(nn.BatchNorm())
                self.fuse.add(nn.Conv2D(channels, kernel_size=1, strides=1, padding=0))

    def hybrid_forward(self, F, x, residual):
        return self.fuse(concat_channels(F, x, residual))


# ---------------------------------------------------------------- paper names
class MSCAM(AttentionalFusion):
    """MS-CAM (paper Sec. 3.2) used as a fusion: ``Z = M(X+Y) * (X+Y)`` with
    ``M = sigmoid(L + G)``, bottleneck ratio ``r`` in both branches. Same keys as
    :class:`ASKCFuse` (``local_att``, ``global_att``)."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r), [Stage(('local_att', 'global_att'), rule='w(x+y)')])


AFF = ASKCFuse
iAFF = ResGlobLocaforGlobLocaChaFuse  # noqa: N816 (paper name)


# ---------------------------------------------------------------- lookup
FUSIONS = {cls.__name__: cls for cls in (
    DirectAddFuse, ASKCFuse, ResGlobLocaforGlobLocaChaFuse, ResGlobLocaChaFuse,
    AXYforXplusYAddFuse, AXYforXYAddFuse, ResGlobChaFuse, ResLocaChaFuse, ResLocaLocaChaFuse,
    ResGlobGlobChaFuse, ConcatFuse, ResGlobforGlobChaFuse, ResLocaforLocaChaFuse,
    AYforXplusYAddFuse, XplusAYforYAddFuse, SEFuse, GAUFuse, SKFuse, HalfASKCFuse,
    ConcatASKCFuse, DepthASKCFuse, Depth4ASKCFuse, AddReLUASKCFuse, LCNASKCFuse, ConcatASKC,
    TwoConcatASKC, RASKCFuse, MSCAM)}

# the ``askc_type`` strings of the original scripts and paper names -> class name
ALIASES = {
    'DirectAdd': 'DirectAddFuse', 'Concat': 'ConcatFuse', 'ResGlobCha': 'ResGlobChaFuse',
    'ResLocaCha': 'ResLocaChaFuse', 'ResGlobLocaCha': 'ResGlobLocaChaFuse',
    'ResLocaLocaCha': 'ResLocaLocaChaFuse', 'ResLocalLocaCha': 'ResLocaLocaChaFuse',
    'ResGlobGlobCha': 'ResGlobGlobChaFuse', 'ResGlobforGlobCha': 'ResGlobforGlobChaFuse',
    'ResLocaforLocaCha': 'ResLocaforLocaChaFuse',
    'ResGlobLocaforGlobLocaCha': 'ResGlobLocaforGlobLocaChaFuse',
    'AYforXplusY': 'AYforXplusYAddFuse', 'XplusAYforY': 'XplusAYforYAddFuse',
    'AXYforXplusY': 'AXYforXplusYAddFuse', 'AXYforXY': 'AXYforXYAddFuse',
    'AFF': 'ASKCFuse', 'iAFF': 'ResGlobLocaforGlobLocaChaFuse', 'MS-CAM': 'MSCAM',
}


def list_fusions(include_aliases=False):
    """Names accepted by :func:`get_fusion` (class names, plus ``askc_type`` strings and paper
    names when ``include_aliases``)."""
    return sorted(FUSIONS) + (sorted(ALIASES) if include_aliases else [])


def resolve_fusion_name(name):
    """Return the class name for a class name, ``askc_type`` string or paper name.

    Matching is exact first, then case-insensitive; unknown names raise ``ValueError`` listing
    the valid ones."""
    if name in FUSIONS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    folded = {key.lower(): value for key, value in {**{n: n for n in FUSIONS}, **ALIASES}.items()}
    if isinstance(name, str) and name.lower() in folded:
        return folded[name.lower()]
    raise ValueError(f'unknown fusion {name!r}; valid names: {", ".join(list_fusions(True))}')


def get_fusion(name, channels=64, r=None, **kwargs):
    """Build a fusion block by name, e.g. ``get_fusion('AFF', 256, r=16)``.

    ``name`` is an original class name (``'ASKCFuse'``), an original ``askc_type`` string
    (``'ResGlobLocaforGlobLocaCha'``, ``'DirectAdd'``, ``'AXYforXY'``...) or a paper name
    (``'MSCAM'``, ``'AFF'``, ``'iAFF'``). ``r`` is passed only to blocks that have a reduction
    ratio (others use their fixed layout); ``channels`` is ignored by ``DirectAddFuse``.
    """
    cls = FUSIONS[resolve_fusion_name(name)]
    accepted = inspect.signature(cls.__init__).parameters
    if 'channels' in accepted:
        kwargs['channels'] = channels
    if r is not None and 'r' in accepted:
        kwargs['r'] = r
    return cls(**kwargs)
