"""ImageNet networks of *Attentional Feature Fusion* (Dai et al., WACV 2021):
AFF/iAFF-ResNet-50 (ResNet-50-D-like) and AFF/iAFF-ResNeXt-50-32x4d."""
from __future__ import annotations

from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm

from ..blocks import AFFBottleneck
from ..fusion.core import use_global_pooling
from ._common import FusionNetwork, check_numbers, deep_stem_layers, resnext_stages, stage_fusion
from .registry import register_network

__all__ = ['AFFResNet', 'AFFResNeXt']


@register_network
class AFFResNet(FusionNetwork):
    """ResNet-v1b/-D with fusion in the bottlenecks (AFF-ResNet-50, iAFF-ResNet-50).

    Parameters
    ----------
    askc_type, start_layer : str or callable, int
        As for :class:`~openaff.models.cifar.CIFARAFFResNet`; the released models fuse from
        stage 3 on.
    layers : list of int
        Bottlenecks per stage, e.g. ``[3, 4, 6, 3]``.
    classes : int
        Output classes.
    dilated : bool
        Dilate stages 3 and 4 (output stride 8) instead of striding.
    last_gamma : bool
        Zero-initialise the last BatchNorm gamma of each bottleneck.
    deep_stem, stem_width, avg_down
        ResNet-C stem of three 3x3 convs, and AvgPool + 1x1 conv projection shortcuts.
    final_drop : float
        Dropout before the classifier.
    use_global_stats : bool
        Freeze BatchNorm statistics.
    norm_layer, norm_kwargs
        Normalisation layer, e.g. ``SyncBatchNorm`` with ``norm_kwargs={'num_devices': 4}``.
    r : int
        Reduction ratio of the fusion (16 in the paper's ImageNet nets).
    """

    min_input_size = 32  # stem, max pool and three strided stages: 2 ** 5

    def __init__(self, askc_type, start_layer, layers, classes=1000, dilated=False,
                 norm_layer=BatchNorm, norm_kwargs=None, last_gamma=False, deep_stem=True,
                 stem_width=32, avg_down=True, final_drop=0.0, use_global_stats=False,
                 name_prefix='', r=16, **kwargs):
        super().__init__(prefix=name_prefix, **kwargs)  # unknown arguments fail here
        check_numbers(layers, classes, start_layer)
        norm_kwargs = dict(norm_kwargs or {})
        if use_global_stats:
            norm_kwargs['use_global_stats'] = True
        self.norm_kwargs = norm_kwargs
        self.inplanes = stem_width * 2 if deep_stem else 64
        with self.name_scope():
            if deep_stem:
                self.conv1 = nn.HybridSequential(prefix='conv1')
                for layer in deep_stem_layers(stem_width, 2, norm_layer, norm_kwargs,
                                              trailing_norm=False):
                    self.conv1.add(layer)
            else:
                self.conv1 = nn.Conv2D(channels=64, kernel_size=7, strides=2, padding=3,
                                       use_bias=False)
            self.bn1 = norm_layer(in_channels=self.inplanes, **norm_kwargs)
            self.relu = nn.Activation('relu')
            self.maxpool = nn.MaxPool2D(pool_size=3, strides=2, padding=1)
            dilations = (1, 1, 2, 4) if dilated else (1, 1, 1, 1)
            for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
                strides = 1 if index == 0 or dilations[index] > 1 else 2
                setattr(self, 'layer%d' % (index + 1), self._make_layer(
                    stage_fusion(askc_type, index + 1, start_layer), index + 1, planes, blocks,
                    strides, dilations[index], avg_down, norm_layer, last_gamma, r))
            self.avgpool = nn.GlobalAvgPool2D()
            self.flat = nn.Flatten()
            self.drop = nn.Dropout(final_drop) if final_drop > 0.0 else None
            self.fc = nn.Dense(in_units=512 * AFFBottleneck.expansion, units=classes)
        use_global_pooling(self, 'operator')  # 14x14 and 7x7 maps: oneDNN pools them faster

    def _shortcut(self, stage_index, planes, strides, dilation, avg_down, norm_layer):
        out_channels = planes * AFFBottleneck.expansion
        if strides == 1 and self.inplanes == out_channels:
            return None
        downsample = nn.HybridSequential(prefix='down%d_' % stage_index)
        with downsample.name_scope():
            if avg_down:
                pool = strides if dilation == 1 else 1
                downsample.add(nn.AvgPool2D(pool_size=pool, strides=pool, ceil_mode=True,
                                            count_include_pad=False))
                downsample.add(nn.Conv2D(out_channels, kernel_size=1, strides=1, use_bias=False))
            else:
                downsample.add(nn.Conv2D(out_channels, kernel_size=1, strides=strides,
                                         use_bias=False))
            downsample.add(norm_layer(in_channels=out_channels, **self.norm_kwargs))
        return downsample

    def _make_layer(self, askc_type, stage_index, planes, blocks, strides, dilation, avg_down,
                    norm_layer, last_gamma, r):
        common = dict(norm_layer=norm_layer, norm_kwargs=self.norm_kwargs,
                      last_gamma=last_gamma, r=r)
        downsample = self._shortcut(stage_index, planes, strides, dilation, avg_down, norm_layer)
        layers = nn.HybridSequential(prefix='layers%d_' % stage_index)
        with layers.name_scope():
            # the first block of a dilated stage keeps the previous stage's dilation, as in
            # GluonCV's ResNetV1b
            layers.add(AFFBottleneck(askc_type, planes, strides, dilation=max(1, dilation // 2),
                                     downsample=downsample, **common))
            self.inplanes = planes * AFFBottleneck.expansion
            for _ in range(1, blocks):
                layers.add(AFFBottleneck(askc_type, planes, dilation=dilation, **common))
        return layers

    def hybrid_forward(self, F, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.flat(self.avgpool(x))
        if self.drop is not None:
            x = self.drop(x)
        return self.fc(x)


@register_network
class AFFResNeXt(FusionNetwork):
    """ResNeXt with fusion in every block (AFF-ResNeXt-50-32x4d, iAFF-ResNeXt-50-32x4d).

    Arguments as :class:`AFFResNet`, plus ``cardinality``, ``bottleneck_width`` and ``use_se``.
    The first stage uses a strided-conv projection, later ones ``avg_down``.
    ``last_gamma=True`` (default) zero-initialises the last BatchNorm of every block: the
    original passed the flag inverted and the released runs trained with zero-init.
    """

    min_input_size = 32  # stem, max pool and three strided stages: 2 ** 5

    def __init__(self, askc_type, start_layer, layers, cardinality, bottleneck_width,
                 classes=1000, last_gamma=True, use_se=False, deep_stem=True, avg_down=True,
                 stem_width=64, norm_layer=BatchNorm, norm_kwargs=None, r=16, **kwargs):
        super().__init__(**kwargs)
        check_numbers(layers, classes, start_layer)
        self.cardinality = cardinality
        self.bottleneck_width = bottleneck_width
        norm_kwargs = norm_kwargs or {}
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='')
            if deep_stem:
                stem = deep_stem_layers(stem_width, 2, norm_layer, norm_kwargs,
                                        trailing_norm=True)
            else:
                stem = [nn.Conv2D(64, kernel_size=7, strides=2, padding=3, use_bias=False),
                        norm_layer(**norm_kwargs), nn.Activation('relu')]
            for layer in stem + [nn.MaxPool2D(3, 2, 1)]:
                self.features.add(layer)
            for stage in resnext_stages(askc_type, start_layer, layers, 64, cardinality,
                                        bottleneck_width,
                                        [avg_down and index > 0 for index in range(len(layers))],
                                        last_gamma=last_gamma, use_se=use_se,
                                        norm_layer=norm_layer, norm_kwargs=norm_kwargs, r=r):
                self.features.add(stage)
            self.features.add(nn.GlobalAvgPool2D())
            self.output = nn.Dense(classes)
        use_global_pooling(self, 'operator')  # 14x14 and 7x7 maps: oneDNN pools them faster

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))
