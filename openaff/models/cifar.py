"""CIFAR networks of *Attentional Feature Fusion* (Dai et al., WACV 2021): a pre-activation
ResNet and a ResNeXt whose residual additions are fusion blocks."""
from __future__ import annotations

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm

from ..blocks import AFFResBlockV2
from ..fusion.core import GlobalAvgPool
from ._common import (
    FusionNetwork,
    check_numbers,
    deep_stem_layers,
    resnext_stages,
    stage_fusion,
    update_input_stats,
)
from .registry import register_network

__all__ = ['CIFARAFFResNet', 'CIFARAFFResNeXt']


@register_network
class CIFARAFFResNet(FusionNetwork):
    """Pre-activation CIFAR ResNet with fusion in every block (AFF-ResNet-32 of the paper).

    Parameters
    ----------
    askc_type, start_layer : str or callable, int
        The fusion of the blocks of stage ``start_layer`` (1-based) and the later ones; the
        earlier stages add plainly.
    layers : list of int
        Blocks per stage.
    channels : list of int
        Stem width, then the width of each stage (``len(layers) + 1`` entries).
    classes : int
        Output classes.
    deep_stem : bool
        Three 3x3 convolutions instead of one in the stem.
    norm_layer, norm_kwargs
        Normalisation layer, e.g. ``mxnet.gluon.contrib.nn.SyncBatchNorm`` with
        ``norm_kwargs={'num_devices': 4}``.
    r : int
        Reduction ratio of the fusion (4 in the paper's CIFAR nets).
    track_input_stats : bool
        Maintain the running statistics of the input BatchNorm during training (see
        :func:`~openaff.models._common.update_input_stats`). ``False`` is the original
        behaviour: they stay 0/1 and inference-mode accuracy collapses.
    """

    def __init__(self, askc_type, start_layer, layers, channels, classes, deep_stem,
                 norm_layer=BatchNorm, norm_kwargs=None, r=4, track_input_stats=True, **kwargs):
        super().__init__(**kwargs)
        if len(layers) != len(channels) - 1:
            raise ValueError(f'channels needs len(layers) + 1 = {len(layers) + 1} entries '
                             f'(stem width, then one per stage); got {channels}')
        check_numbers(layers, classes, start_layer, channels)
        self.min_input_size = 2 ** (len(layers) - 1)  # stride 2 in every stage after the first
        norm_kwargs = norm_kwargs or {}
        self.track_input_stats = track_input_stats
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='')
            # standardises the raw input; see update_input_stats for why it is special
            self.features.add(norm_layer(scale=False, center=False, **norm_kwargs))
            if deep_stem:
                for layer in deep_stem_layers(channels[0] // 2, 1, norm_layer, norm_kwargs,
                                              trailing_norm=False):
                    self.features.add(layer)
            else:
                self.features.add(nn.Conv2D(channels[0], 3, 1, 1, use_bias=False))
            in_channels = channels[0]
            for index, num_blocks in enumerate(layers):
                self.features.add(self._make_layer(
                    stage_fusion(askc_type, index + 1, start_layer), num_blocks,
                    channels[index + 1], in_channels, 1 if index == 0 else 2, index + 1,
                    norm_layer, norm_kwargs, r))
                in_channels = channels[index + 1]
            self.features.add(norm_layer(**norm_kwargs))
            self.features.add(nn.Activation('relu'))
            self.features.add(GlobalAvgPool())
            self.features.add(nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_channels)

    @staticmethod
    def _make_layer(askc_type, num_blocks, channels, in_channels, stride, stage_index,
                    norm_layer, norm_kwargs, r):
        layer = nn.HybridSequential(prefix='stage%d_' % stage_index)
        with layer.name_scope():
            for index in range(num_blocks):
                first = index == 0
                layer.add(AFFResBlockV2(
                    askc_type, channels, stride if first else 1,
                    downsample=first and (stride != 1 or channels != in_channels),
                    in_channels=in_channels if first else channels,
                    norm_layer=norm_layer, norm_kwargs=norm_kwargs, r=r))
        return layer

    def forward(self, x, *args):
        # outside the (possibly cached) graph: every BatchNorm updates its statistics when
        # training with gradients recorded; the input one has to be told to
        out = super().forward(x, *args)
        if (self.track_input_stats and isinstance(x, mx.nd.NDArray) and autograd.is_training()
                and autograd.is_recording()):
            update_input_stats(self.features[0], x, self.features[0]._kwargs['momentum'])
        return out

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


@register_network
class CIFARAFFResNeXt(FusionNetwork):
    """CIFAR ResNeXt (Xie et al., 2017) with fusion in every block (AFF-ResNeXt-38/47).

    Arguments as :class:`CIFARAFFResNet`, plus ``cardinality`` and ``bottleneck_width``; only
    ``channels[0]`` is used (stage widths double from it). ``last_gamma=True`` (default, as the
    released runs effectively trained) zero-initialises the last BatchNorm of every block.
    ``r`` defaults to 16, the ResNeXt block's ratio in the original.
    """

    def __init__(self, askc_type, start_layer, layers, channels, cardinality, bottleneck_width,
                 classes=10, deep_stem=False, use_se=False, norm_layer=BatchNorm,
                 norm_kwargs=None, last_gamma=True, r=16, **kwargs):
        super().__init__(**kwargs)
        check_numbers(layers, classes, start_layer, channels[:1])
        self.min_input_size = 2 ** (len(layers) - 1)
        self.cardinality = cardinality
        self.bottleneck_width = bottleneck_width
        norm_kwargs = norm_kwargs or {}
        width = channels[0]
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='')
            if deep_stem:
                stem = deep_stem_layers(width // 2, 1, norm_layer, norm_kwargs,
                                        trailing_norm=True)
            else:
                stem = [nn.Conv2D(width, 3, 1, 1, use_bias=False), norm_layer(**norm_kwargs),
                        nn.Activation('relu')]
            for layer in stem:
                self.features.add(layer)
            for stage in resnext_stages(askc_type, start_layer, layers, width, cardinality,
                                        bottleneck_width, [True] * len(layers),
                                        last_gamma=last_gamma, use_se=use_se,
                                        norm_layer=norm_layer, norm_kwargs=norm_kwargs, r=r):
                self.features.add(stage)
            self.features.add(GlobalAvgPool())
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))
