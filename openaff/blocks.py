"""Residual blocks whose shortcut addition is replaced by a fusion block (Dai et al., WACV 2021).

Any fusion of :mod:`openaff.fusion` can be used in any block: ``askc_type`` is an original
``askc_type`` string, a fusion class name or a paper name (``'AFF'``, ``'iAFF'``), or a callable
``(channels) -> HybridBlock`` for a fusion of your own. Child names and layer order are the
original's, so checkpoints load.
"""
from __future__ import annotations

import math

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock
from mxnet.gluon.nn import BatchNorm

from .fusion import get_fusion

__all__ = ['AFFResBlockV2', 'AFFBottleneck', 'AFFResNeXtBlock', 'make_fusion']


def make_fusion(askc_type, channels, r):
    """Fusion for a block's output width: a name for :func:`~openaff.fusion.get_fusion` or a
    callable taking the channel count."""
    if callable(askc_type):
        return askc_type(channels)
    return get_fusion(askc_type, channels=channels, r=r)


def _norm(norm_layer, norm_kwargs, **extra):
    return norm_layer(**extra, **(norm_kwargs or {}))


def _conv3x3(channels, stride, in_channels):
    return nn.Conv2D(channels, kernel_size=3, strides=stride, padding=1, use_bias=False,
                     in_channels=in_channels)


def _avg_down(stride):
    return nn.AvgPool2D(pool_size=stride, strides=stride, ceil_mode=True,
                        count_include_pad=False)


class AFFResBlockV2(HybridBlock):
    """Pre-activation residual block (CIFAR) ending in a fusion of body and shortcut.

    ``BN-ReLU-conv3x3-BN-ReLU-conv3x3``; the downsampling shortcut is AvgPool(stride) + 1x1 conv.
    ``r`` is the fusion's reduction ratio (4 in the original CIFAR networks).
    """

    def __init__(self, askc_type, channels, stride, downsample=False, in_channels=0,
                 norm_layer=BatchNorm, norm_kwargs=None, r=4, **kwargs):
        super().__init__(**kwargs)
        self.resfwd = nn.HybridSequential(prefix='resfwd')
        self.resfwd.add(_norm(norm_layer, norm_kwargs))
        self.resfwd.add(nn.Activation('relu'))
        self.resfwd.add(_conv3x3(channels, stride, in_channels))
        self.resfwd.add(_norm(norm_layer, norm_kwargs))
        self.resfwd.add(nn.Activation('relu'))
        self.resfwd.add(_conv3x3(channels, 1, channels))

        self.downsample = nn.HybridSequential(prefix='downsample')
        if downsample:
            self.downsample.add(_avg_down(stride))
            self.downsample.add(nn.Conv2D(channels, kernel_size=1, strides=1, use_bias=False,
                                          in_channels=in_channels))
        self.attention = make_fusion(askc_type, channels, r)

    def hybrid_forward(self, F, x):
        residual = self.downsample(x) if len(self.downsample) else x
        return self.attention(self.resfwd(x), residual)


class AFFBottleneck(HybridBlock):
    """ResNet-v1b bottleneck (1x1, 3x3, 1x1) with the fusion before the final ReLU.

    ``last_gamma=True`` zero-initialises the gamma of the last BatchNorm. ``downsample`` is the
    shortcut block (or None for identity); ``r`` the fusion's reduction ratio (16 on ImageNet).
    """
    expansion = 4

    def __init__(self, askc_type, planes, strides=1, dilation=1, downsample=None,
                 norm_layer=BatchNorm, norm_kwargs=None, last_gamma=False,
                 r=16, **kwargs):
        super().__init__(**kwargs)
        norm_kwargs = norm_kwargs or {}
        self.conv1 = nn.Conv2D(channels=planes, kernel_size=1, use_bias=False)
        self.bn1 = norm_layer(in_channels=planes, **norm_kwargs)
        self.conv2 = nn.Conv2D(channels=planes, kernel_size=3, strides=strides, padding=dilation,
                               dilation=dilation, use_bias=False)
        self.bn2 = norm_layer(in_channels=planes, **norm_kwargs)
        self.relu1 = nn.Activation('relu')
        self.relu2 = nn.Activation('relu')
        self.relu3 = nn.Activation('relu')
        self.conv3 = nn.Conv2D(channels=planes * 4, kernel_size=1, use_bias=False)
        zero_gamma = {'gamma_initializer': 'zeros'} if last_gamma else {}
        self.bn3 = norm_layer(in_channels=planes * 4, **zero_gamma, **norm_kwargs)
        self.downsample = downsample
        self.attention = make_fusion(askc_type, planes * 4, r)

    def hybrid_forward(self, F, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu3(self.attention(out, residual))


class AFFResNeXtBlock(HybridBlock):
    """ResNeXt bottleneck (Xie et al., 2017) with the fusion before the final ReLU.

    ``last_gamma=True`` zero-initialises the gamma of the last BatchNorm, as the name says. The
    original block had this inverted (it zero-initialised when ``last_gamma=False``); the
    ResNeXt model classes default to ``last_gamma=True`` so that they train like the released
    runs. ``use_se`` adds the GluonCV squeeze-and-excitation branch; ``avg_down`` uses
    AvgPool + 1x1 conv for the projection shortcut.
    """

    def __init__(self, askc_type, channels, cardinality, bottleneck_width, stride,
                 downsample=False, last_gamma=False, use_se=False, avg_down=True,
                 norm_layer=BatchNorm, norm_kwargs=None, r=16, **kwargs):
        super().__init__(**kwargs)
        group_width = cardinality * int(math.floor(channels * (bottleneck_width / 64)))
        zero_gamma = {'gamma_initializer': 'zeros'} if last_gamma else {}

        self.body = nn.HybridSequential(prefix='')
        self.body.add(nn.Conv2D(group_width, kernel_size=1, use_bias=False))
        self.body.add(_norm(norm_layer, norm_kwargs))
        self.body.add(nn.Activation('relu'))
        self.body.add(nn.Conv2D(group_width, kernel_size=3, strides=stride, padding=1,
                                groups=cardinality, use_bias=False))
        self.body.add(_norm(norm_layer, norm_kwargs))
        self.body.add(nn.Activation('relu'))
        self.body.add(nn.Conv2D(channels * 4, kernel_size=1, use_bias=False))
        self.body.add(_norm(norm_layer, norm_kwargs, **zero_gamma))

        self.se = None
        if use_se:
            self.se = nn.HybridSequential(prefix='')
            self.se.add(nn.Conv2D(channels // 4, kernel_size=1, padding=0))
            self.se.add(nn.Activation('relu'))
            self.se.add(nn.Conv2D(channels * 4, kernel_size=1, padding=0))
            self.se.add(nn.Activation('sigmoid'))

        self.downsample = None
        if downsample:
            self.downsample = nn.HybridSequential(prefix='')
            if avg_down:
                self.downsample.add(_avg_down(stride))
                self.downsample.add(nn.Conv2D(channels * 4, kernel_size=1, strides=1,
                                              use_bias=False))
            else:
                self.downsample.add(nn.Conv2D(channels * 4, kernel_size=1, strides=stride,
                                              use_bias=False))
            self.downsample.add(_norm(norm_layer, norm_kwargs))
        self.attention = make_fusion(askc_type, channels * 4, r)

    def hybrid_forward(self, F, x):
        out = self.body(x)
        if self.se is not None:
            out = F.broadcast_mul(out, self.se(F.contrib.AdaptiveAvgPooling2D(out, output_size=1)))
        residual = x if self.downsample is None else self.downsample(x)
        return F.Activation(self.attention(out, residual), act_type='relu')
