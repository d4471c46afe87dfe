"""AFF-Inception: the paper's same-layer scenario (Dai et al., "Attentional Feature Fusion",
WACV 2021, Sec. 4 and Fig. 9), where the parallel branches of one Inception-style module are
fused by attention instead of concatenated.

Each module runs ``len(kernels)`` branches of equal width ``w`` over its input (``conv k x k``
with dilation ``d``, BN, ReLU: by default 1x1, 3x3 and a dilated 3x3 whose receptive field is
5x5) and merges them into ``w`` channels:

* ``'AFF'`` -- :class:`~openaff.fusion.MultiAFF` over the branches, with ``r = 2``;
* ``'concat'`` -- concatenation then a 1x1 projection back to ``w`` and BN: the Inception way,
  with exactly as many weights as the ``r = 2`` fusion (``N w^2`` each, biases aside);
* ``'DirectAdd'`` -- the sum of the branches (no weights).

The merged map is added to the module's shortcut (an identity, or AvgPool + 1x1 conv + BN
when the module changes width or stride) and activated, as in Inception-ResNet.
"""
from __future__ import annotations

from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm

from ..fusion import MultiAFF, resolve_fusion_name
from ..fusion.core import GlobalAvgPool
from ..fusion.graphs import portable
from ._common import FusionNetwork, check_numbers
from .registry import register_network

__all__ = ['CIFARInception', 'InceptionModule', 'INCEPTION_MERGES']

INCEPTION_MERGES = ('AFF', 'concat', 'DirectAdd')


def inception_merge(askc_type):
    """``'AFF'``, ``'concat'`` or ``'DirectAdd'`` for an ``askc_type``: AFF's names
    (``'AFF'``, ``'ASKCFuse'``, ``'MultiAFF'``) fuse by attention; ``ValueError`` otherwise."""
    if askc_type == 'concat':
        return 'concat'
    try:
        name = resolve_fusion_name(askc_type)
    except ValueError:
        name = None
    merge = {'ASKCFuse': 'AFF', 'MultiAFF': 'AFF', 'DirectAddFuse': 'DirectAdd'}.get(name)
    if merge is None:
        raise ValueError(f'an Inception module merges its branches by AFF, concat or DirectAdd; '
                         f'got askc_type={askc_type!r}')
    return merge


def _conv_bn(channels, kernel, dilation=1, stride=1, relu=True, prefix=''):
    layer = nn.HybridSequential(prefix=prefix)
    layer.add(nn.Conv2D(channels, kernel, strides=stride, padding=dilation * (kernel // 2),
                        dilation=dilation, use_bias=False))
    layer.add(BatchNorm())
    if relu:
        layer.add(nn.Activation('relu'))
    return layer


class InceptionModule(nn.HybridBlock):
    """Branches ``conv(k, dilation d)-BN-ReLU`` for each ``(k, d)`` of ``kernels``, merged by
    ``merge`` (see the module docstring), plus the shortcut, then ReLU."""

    def __init__(self, merge, channels, stride=1, in_channels=0, kernels=((1, 1), (3, 1), (3, 2)),
                 r=2, **kwargs):
        super().__init__(**kwargs)
        if merge not in INCEPTION_MERGES:
            raise ValueError(f'merge must be one of {INCEPTION_MERGES}, got {merge!r}')
        self._merge = merge
        with self.name_scope():
            self.branches = nn.HybridSequential(prefix='branch')
            for kernel, dilation in kernels:
                self.branches.add(_conv_bn(channels, kernel, dilation, stride))
            if merge == 'AFF':
                self.fuse = MultiAFF(channels, num_inputs=len(kernels), r=r, prefix='fuse_')
            elif merge == 'concat':
                self.fuse = _conv_bn(channels, 1, relu=False, prefix='fuse_')
            self.shortcut = None
            if stride != 1 or channels != in_channels:
                self.shortcut = nn.HybridSequential(prefix='shortcut_')
                if stride != 1:
                    self.shortcut.add(nn.AvgPool2D(stride, stride, ceil_mode=True,
                                                   count_include_pad=False))
                self.shortcut.add(_conv_bn(channels, 1, relu=False))

    def hybrid_forward(self, F, x):
        outs = [branch(x) for branch in self.branches]
        if self._merge == 'AFF':
            merged = self.fuse(*outs)
        elif self._merge == 'concat':
            merged = self.fuse(F.concat(*outs, dim=1))
        else:
            merged = F.add_n(*outs)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        if portable(F):
            # MXNet 1.9.1's AMP conversion (float16 and bfloat16) leaves a Pooling's output in
            # float32 but the next convolution's weights cast when another consumer of its
            # input (the branches) is visited first; the shortcut first types correctly.
            # Device graphs keep their order: it fixes the gradients' rounding and the
            # deferred initialisation's order.
            return F.relu(shortcut + merged)
        return F.relu(merged + shortcut)


@register_network
class CIFARInception(FusionNetwork):
    """A CIFAR network of :class:`InceptionModule` stages (AFF-Inception of the paper's
    same-layer scenario).

    Parameters
    ----------
    askc_type : str
        How modules merge their branches: an AFF name (``'AFF'``, ``'ASKCFuse'``,
        ``'MultiAFF'``), ``'concat'`` (the same-budget twin) or ``'DirectAdd'``.
    layers : list of int
        Modules per stage; every stage after the first starts with stride 2.
    channels : list of int
        Stem width, then each stage's branch width (``len(layers) + 1`` entries).
    classes : int
    kernels : tuple of (kernel, dilation)
        The branches of every module.
    r : int
        MultiAFF's reduction ratio; 2 gives the concatenation twin's parameter count.
    """

    def __init__(self, askc_type='AFF', layers=(2, 2, 2), channels=(32, 32, 64, 128),
                 classes=100, kernels=((1, 1), (3, 1), (3, 2)), r=2, **kwargs):
        super().__init__(**kwargs)
        if len(layers) != len(channels) - 1:
            raise ValueError(f'channels needs len(layers) + 1 = {len(layers) + 1} entries '
                             f'(stem width, then one per stage); got {list(channels)}')
        check_numbers(layers, classes, 1, channels)
        if len(kernels) < 2 or not all(
                isinstance(k, int) and k % 2 and isinstance(d, int) and d >= 1
                for k, d in kernels):
            raise ValueError(f'kernels must be at least 2 (odd kernel, dilation >= 1) pairs, got '
                             f'{kernels!r}')
        merge = inception_merge(askc_type)
        self.min_input_size = 2 ** (len(layers) - 1)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='')
            self.features.add(_conv_bn(channels[0], 3))
            in_channels = channels[0]
            for index, count in enumerate(layers):
                stage = nn.HybridSequential(prefix=f'stage{index + 1}_')
                with stage.name_scope():
                    for block in range(count):
                        stride = 2 if index and not block else 1
                        stage.add(InceptionModule(merge, channels[index + 1], stride,
                                                  in_channels, kernels, r))
                        in_channels = channels[index + 1]
                self.features.add(stage)
            self.features.add(GlobalAvgPool())
            self.output = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))
