"""The fusion blocks of the original open-aff code, as named configurations of
:class:`~openaff.fusion.core.AttentionalFusion` (Dai et al., WACV 2021, arXiv:2009.14082).

The current generation (``DirectAddFuse``, ``ASKCFuse`` = AFF, ``ResGlobLocaforGlobLocaChaFuse`` =
iAFF) and the earlier ablation catalog (commit ``ca45a57``), with the original class names,
constructor arguments, child attribute names and layer order: checkpoints written with
``save_parameters`` use structural keys such as ``attention.local_att.0.weight``. Each class
registers itself with the ``askc_type`` strings and paper names that select it.
"""
from __future__ import annotations

import numbers

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .core import AttentionalFusion, Stage, concat_channels, select, sigmoid
from .registry import register


# ---------------------------------------------------------------- branch specifications
def _reduced(channels, r):
    """The bottleneck width ``channels // r``; ``ValueError`` when it would be empty."""
    if not (isinstance(channels, numbers.Integral) and channels >= 1):
        raise ValueError(f'channels must be a positive int, got {channels!r}')
    if not (isinstance(r, numbers.Real) and r >= 1):
        raise ValueError(f'the reduction ratio r must be at least 1, got {r!r}')
    if channels // r < 1:
        raise ValueError(f'r={r} leaves no channel of {channels} in the bottleneck (r must be '
                         f'at most channels)')
    return int(channels // r)


def _mlp(channels, r, pooled=False, **extra):
    """Bottleneck branch conv(C/r) BN ReLU conv(C) BN, as in MS-CAM."""
    return dict(widths=(_reduced(channels, r), channels), pooled=pooled, **extra)


def _linear(width, pooled=False, **extra):
    """Single conv(width) BN branch of the earlier ablation blocks."""
    return dict(widths=(width,), pooled=pooled, **extra)


def _ms_cam(channels, r, suffix='', pooled_local=False, pooled_global=True, **extra):
    """The two MS-CAM branches ``local_att{suffix}`` and ``global_att{suffix}``."""
    return [('local_att' + suffix, _mlp(channels, r, pooled=pooled_local, **extra)),
            ('global_att' + suffix, _mlp(channels, r, pooled=pooled_global, **extra))]


# ---------------------------------------------------------------- the current generation
@register('DirectAdd')
class DirectAddFuse(HybridBlock):
    """Plain addition ``x + residual``: the baseline fusion of a residual block."""

    def hybrid_forward(self, F, x, residual):
        return x + residual


@register('AFF')
class ASKCFuse(AttentionalFusion):
    """AFF: ``Z = 2 * (M(X+Y) * X + (1 - M(X+Y)) * Y)`` with MS-CAM ``M`` (paper Sec. 3.3).

    The factor 2 is the original code's (it keeps the scale of ``X + Y``)."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r), [Stage(('local_att', 'global_att'))])


@register('ResGlobLocaforGlobLocaCha', 'iAFF')
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
@register('ResGlobLocaCha')
class ResGlobLocaChaFuse(AttentionalFusion):
    """Single-layer local + global context (no bottleneck), soft selection x2."""

    def __init__(self, channels=64):
        super().__init__([('local_att', _linear(channels)),
                          ('global_att', _linear(channels, pooled=True))],
                         [Stage(('local_att', 'global_att'))])


@register('ResGlobCha')
class ResGlobChaFuse(AttentionalFusion):
    """Global context only (SE-like, no reduction), soft selection x2."""

    def __init__(self, channels=64, asBackbone=False):  # noqa: N803 (original name)
        super().__init__([('attention', _mlp(channels, 1, pooled=True))],
                         [Stage(('attention',))], return_weight=asBackbone)


@register('ResLocaCha')
class ResLocaChaFuse(AttentionalFusion):
    """Local (point-wise) context only, no reduction, soft selection x2."""

    def __init__(self, channels=64, asBackbone=False):  # noqa: N803 (original name)
        super().__init__([('attention', _mlp(channels, 1))],
                         [Stage(('attention',))], return_weight=asBackbone)


@register('ResLocaLocaCha', 'ResLocalLocaCha')
class ResLocaLocaChaFuse(AttentionalFusion):
    """Local + Local ablation: both MS-CAM branches at full resolution."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, pooled_global=False),
                         [Stage(('local_att', 'global_att'))])


@register('ResGlobGlobCha')
class ResGlobGlobChaFuse(AttentionalFusion):
    """Global + Global ablation: both MS-CAM branches pooled."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, pooled_local=True),
                         [Stage(('local_att', 'global_att'))])


@register('ResGlobforGlobCha')
class ResGlobforGlobChaFuse(AttentionalFusion):
    """Iterative fusion with single-layer global context in both stages."""

    def __init__(self, channels=64):
        super().__init__([('global_att', _linear(channels, pooled=True)),
                          ('global_att2', _linear(channels, pooled=True))],
                         [Stage(('global_att',)), Stage(('global_att2',))])


@register('ResLocaforLocaCha')
class ResLocaforLocaChaFuse(AttentionalFusion):
    """Iterative fusion with single-layer local context in both stages."""

    def __init__(self, channels=64):
        super().__init__([('local_att', _linear(channels)), ('local_att2', _linear(channels))],
                         [Stage(('local_att',)), Stage(('local_att2',))])


def _single_layer_ms_cam(channels):
    return [('local_att', _linear(channels)), ('global_att', _linear(channels, pooled=True))]


@register('AYforXplusY')
class AYforXplusYAddFuse(AttentionalFusion):
    """``A(X) * Y + X``: attention from ``x`` alone gates the residual."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='x+wy')], source='x')


@register('XplusAYforY')
class XplusAYforYAddFuse(AttentionalFusion):
    """``Y + A(X) * X``: attention from ``x`` alone gates ``x``."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='y+wx')], source='x')


@register('AXYforXplusY')
class AXYforXplusYAddFuse(AttentionalFusion):
    """``A(X+Y) * Y + X``."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='x+wy')])


@register('AXYforXY')
class AXYforXYAddFuse(AttentionalFusion):
    """``A(X+Y) * (X+Y)``: channel attention on the sum."""

    def __init__(self, channels=64):
        super().__init__(_single_layer_ms_cam(channels),
                         [Stage(('local_att', 'global_att'), rule='w(x+y)')])


@register()
class SEFuse(AttentionalFusion):
    """Squeeze-and-Excitation on ``x``: ``Y + SE(X) * X``."""

    def __init__(self, channels=64, r=4):
        super().__init__([('global_att', _mlp(channels, r, pooled=True))],
                         [Stage(('global_att',), rule='y+wx')], source='x')


@register()
class GAUFuse(AttentionalFusion):
    """Global Attention Upsample style: ``X + G(X) * Y``."""

    def __init__(self, channels=64):
        super().__init__([('global_att', _linear(channels, pooled=True))],
                         [Stage(('global_att',), rule='x+wy')], source='x')


@register()
class HalfASKCFuse(AttentionalFusion):
    """MS-CAM whose branches stop at C/r channels; a shared conv (``post``) mixes their
    concatenation back to C."""

    def __init__(self, channels=64, r=4):
        inter = _reduced(channels, r)
        super().__init__([('local_att', _linear(inter, out_act='relu')),
                          ('global_att', _linear(inter, pooled=True, out_act='relu')),
                          ('post', _linear(channels))],
                         [Stage(('local_att', 'global_att'), merge='concat', post='post')])


@register()
class ConcatASKCFuse(AttentionalFusion):
    """MS-CAM branches (with a trailing ReLU) concatenated and mixed by a ``post`` conv."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, out_act='relu') + [('post', _linear(channels))],
                         [Stage(('local_att', 'global_att'), merge='concat', post='post')])


@register()
class DepthASKCFuse(AttentionalFusion):
    """AFF whose local branch is depth-wise (per-channel) instead of a bottleneck."""

    def __init__(self, channels=64, r=4):
        super().__init__([('local_att', _mlp(channels, 1, groups=channels)),
                          ('global_att', _mlp(channels, r, pooled=True))],
                         [Stage(('local_att', 'global_att'))])


@register()
class Depth4ASKCFuse(AttentionalFusion):
    """AFF with four depth-wise local branches summed with the global one."""

    def __init__(self, channels=64, r=4):
        locals_ = [f'local_att{i}' for i in range(1, 5)]
        super().__init__([(name, _mlp(channels, 1, groups=channels)) for name in locals_]
                         + [('global_att', _mlp(channels, r, pooled=True))],
                         [Stage(tuple(locals_) + ('global_att',))])


@register()
class AddReLUASKCFuse(AttentionalFusion):
    """AFF whose two branches end with a ReLU before being added."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r, out_act='relu'),
                         [Stage(('local_att', 'global_att'))])


@register()
class LCNASKCFuse(AttentionalFusion):
    """AFF with the reduction fixed at 4 (identical layout to :class:`ASKCFuse`)."""

    def __init__(self, channels=64):
        super().__init__(_ms_cam(channels, 4), [Stage(('local_att', 'global_att'))])


@register()
class ConcatASKC(AttentionalFusion):
    """A shared conv-BN-ReLU on ``X + Y`` feeds the MS-CAM branches; a conv (``sig``) mixes
    their sum before the sigmoid."""

    def __init__(self, channels=64):
        super().__init__([('shared_att', _linear(channels, out_act='relu'))]
                         + _ms_cam(channels, 4) + [('sig', _linear(channels))],
                         [Stage(('local_att', 'global_att'), post='sig')], pre='shared_att')


@register()
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


@register()
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


@register()
class RASKCFuse(AttentionalFusion):
    """Recursive AFF: a second MS-CAM on ``L(X+Y) + G(X+Y)`` chooses between the local and
    global contexts, whose mixture gives the final weights: ``Z = w*X + (1-w)*Y``."""

    def __init__(self, channels=64):
        super().__init__(_ms_cam(channels, 4) + _ms_cam(channels, 4, suffix='2'), [])

    def hybrid_forward(self, F, x, residual):
        summed = x + residual
        local, glob = self.local_att(summed), self.global_att(summed)
        context = F.broadcast_add(local, glob)
        choice = sigmoid(F, F.broadcast_add(self.local_att2(context), self.global_att2(context)))
        mixed = F.broadcast_add(F.broadcast_mul(local, choice), F.broadcast_mul(glob, 1 - choice))
        return select(F, x, residual, sigmoid(F, mixed), 1)


@register('Concat')
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
@register('MS-CAM')
class MSCAM(AttentionalFusion):
    """MS-CAM (paper Sec. 3.2) used as a fusion: ``Z = M(X+Y) * (X+Y)`` with
    ``M = sigmoid(L + G)``, bottleneck ratio ``r`` in both branches. Same keys as
    :class:`ASKCFuse` (``local_att``, ``global_att``)."""

    def __init__(self, channels=64, r=4):
        super().__init__(_ms_cam(channels, r), [Stage(('local_att', 'global_att'), rule='w(x+y)')])


AFF = ASKCFuse
iAFF = ResGlobLocaforGlobLocaChaFuse  # noqa: N816 (paper name)

__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and value.__module__ == __name__] + ['AFF', 'iAFF']
