"""Pieces shared by the CIFAR and ImageNet networks."""
from mxnet.gluon import nn


def stage_fusion(askc_type, stage_index, start_layer):
    """Stages before ``start_layer`` add plainly, as in the original networks."""
    return 'DirectAdd' if stage_index < start_layer else askc_type


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
