"""Pieces shared by the CIFAR and ImageNet networks."""
from mxnet import autograd
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



def update_input_stats(norm, x, momentum=0.9):
    """Moving-average update of an input BatchNorm's statistics from the batch ``x``, as mxnet's
    BatchNorm backward does for every other BatchNorm (biased variance, ``momentum`` 0.9).

    In mxnet 1.9.1 (CPU, and the same kernel contract elsewhere) the running mean/var of a
    BatchNorm are written by its *backward* pass. The input BatchNorm(scale=False, center=False)
    of the CIFAR ResNet has no learnable parameter and its input needs no gradient, so autograd
    prunes its backward and the original network never updated its statistics (they stayed 0/1
    and inference-mode accuracy collapsed). Its gamma and beta cannot be given a gradient
    (Gluon marks them non-differentiable), so the update is done here, on the NDArray input.
    """
    axes = tuple(i for i in range(x.ndim) if i != 1)
    with autograd.pause():  # a statistics update, not part of what is differentiated
        mean = x.mean(axis=axes)
        var = (x - mean.reshape((1, -1) + (1,) * (x.ndim - 2))).square().mean(axis=axes)
        for param, batch_value in ((norm.running_mean, mean), (norm.running_var, var)):
            current = param.data(x.context)
            current[:] = momentum * current + (1 - momentum) * batch_value
