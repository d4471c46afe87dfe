"""Feature pyramids whose top-down merges are attentional fusions: the paper's long-skip
scenario (Dai et al., "Attentional Feature Fusion", WACV 2021, Sec. 4, AFF-FPN), where a
lateral map and the upsampled coarser one are fused by AFF/iAFF instead of added.

* :class:`TopDownPyramid` — the top-down pathway as a Gluon block over a list of backbone maps
  (finest first): lateral 1x1 convolutions to ``num_filters``, nearest upsampling, the merge
  (``'add'``, ``'AFF'``, ``'iAFF'`` or any registered fusion), a 3x3 smoothing convolution.
* :class:`AFFFPNFeatureExpander` — the same pathway with the constructor of GluonCV's
  ``FPNFeatureExpander`` (a backbone network and the names of its output layers), so GluonCV's
  Faster R-CNN FPN can take it; ``merge`` switches between addition and attention.
* :class:`FPNSegmentation` — semantic segmentation: a backbone's stages, the pyramid, and a
  per-pixel classifier on the sum of its levels, upsampled to the input.
"""
from __future__ import annotations

import mxnet as mx
from mxnet.gluon import HybridBlock, SymbolBlock, nn

from .fusion import get_fusion
from .fusion.graphs import DeviceGraphs

__all__ = ['TopDownPyramid', 'AFFFPNFeatureExpander', 'FPNSegmentation', 'MERGES']

MERGES = ('add', 'AFF', 'iAFF')


class _Add(HybridBlock):
    def hybrid_forward(self, F, lateral, top_down):
        return lateral + top_down


class TopDownPyramid(DeviceGraphs, HybridBlock):
    """``pyramid(c_1, ..., c_L)`` (finest first) -> ``[p_1, ..., p_L]`` (plus ``p_{L+1}`` by
    stride-2 max pooling with ``use_p6``), each of ``num_filters[i]`` channels.

    ``merge`` is ``'add'`` (the FPN of Lin et al., 2017), ``'AFF'``, ``'iAFF'`` or any name of
    :func:`openaff.fusion.list_fusions`; the fusion sees ``(lateral, upsampled)``. Merged levels
    need equal widths, as in FPN."""

    def __init__(self, num_filters, merge='AFF', r=4, use_p6=False, norm_layer=None,
                 norm_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if len(set(num_filters)) != 1:
            raise ValueError(f'the pyramid merges levels of one width, got {num_filters}')
        self.levels, self.use_p6 = len(num_filters), use_p6
        norm = (lambda: norm_layer(**(norm_kwargs or {}))) if norm_layer else None
        with self.name_scope():
            self.lateral, self.smooth, self.merges = (nn.HybridSequential(prefix=p)
                                                      for p in ('lateral_', 'smooth_', 'merge_'))
            for width in num_filters:
                self.lateral.add(_conv_norm(width, 1, norm))
                self.smooth.add(_conv_norm(width, 3, norm))
            with self.merges.name_scope():
                for index in range(self.levels - 1):
                    self.merges.add(_Add() if merge == 'add' else
                                    get_fusion(merge, num_filters[index], r=r))

    def hybrid_forward(self, F, *features):
        if len(features) != self.levels:
            raise ValueError(f'the pyramid has {self.levels} levels, got {len(features)} maps')
        top = self.lateral[self.levels - 1](features[-1])
        outputs = [self.smooth[self.levels - 1](top)]
        for index in range(self.levels - 2, -1, -1):
            lateral = self.lateral[index](features[index])
            upsampled = F.slice_like(F.UpSampling(top, scale=2, sample_type='nearest'),
                                     lateral, axes=(2, 3))
            top = self.merges[index](lateral, upsampled)
            outputs.insert(0, self.smooth[index](top))
        if self.use_p6:
            outputs.append(F.Pooling(outputs[-1], pool_type='max', kernel=(1, 1),
                                     stride=(2, 2)))
        return tuple(outputs)


def _conv_norm(width, kernel, norm):
    block = nn.HybridSequential(prefix='')
    block.add(nn.Conv2D(width, kernel, padding=kernel // 2, use_bias=norm is None))
    if norm:
        block.add(norm())
    return block


def initialize_by_name(params, ctx=None):
    """Initialise parameters that have no value yet by what their names say (weights Xavier,
    biases and betas 0, gammas 1, running statistics 0/1): a SymbolBlock would otherwise give
    every new parameter its default initializer, biases included."""
    for name, param in params.items():
        if param._data is not None or param._deferred_init:
            continue
        init = (mx.init.One() if name.endswith(('gamma', 'running_var', 'moving_var')) else
                mx.init.Zero() if name.endswith(('bias', 'beta', 'running_mean', 'moving_mean'))
                else mx.init.Xavier(rnd_type='uniform', factor_type='in', magnitude=1.))
        param.initialize(init=init, ctx=ctx or mx.cpu())


class AFFFPNFeatureExpander(SymbolBlock):
    """GluonCV's ``FPNFeatureExpander`` with attentional merges: the same ``network``,
    ``outputs``, ``num_filters``, ``use_p6``, ``norm_layer``/``norm_kwargs``, ``pretrained``,
    ``ctx`` and ``inputs``; ``merge`` as in :class:`TopDownPyramid` (``'add'`` is GluonCV's
    pathway, up to its unused ``use_1x1``/``use_upsample``/``use_elewadd`` switches, which stay
    on). Returns ``[P2, ..., P5(, P6)]``."""

    def __init__(self, network, outputs, num_filters, merge='AFF', r=4, use_p6=False,
                 no_bias=True, pretrained=False, norm_layer=None, norm_kwargs=None,
                 ctx=None, inputs=('data',), **_gluoncv_switches):
        from gluoncv.nn.feature import _parse_network
        if ctx is None:
            ctx = mx.cpu()
        unknown = set(_gluoncv_switches) - {'use_1x1', 'use_upsample', 'use_elewadd',
                                            'p6_conv'}
        if unknown:
            raise TypeError(f'unexpected arguments: {sorted(unknown)}')
        data, features, params = _parse_network(network, outputs, inputs, pretrained, ctx)
        pyramid = TopDownPyramid(num_filters, merge, r, use_p6, norm_layer, norm_kwargs,
                                 prefix='fpn_')
        levels = pyramid(*features)
        super().__init__(list(levels), data, params)
        initialize_by_name(self.collect_params(), ctx)


class FPNSegmentation(DeviceGraphs, HybridBlock):
    """Semantic segmentation on a backbone's stages: ``stages`` (a list of blocks run in order,
    each giving one pyramid level, finest first), a :class:`TopDownPyramid` of ``width``
    channels merged by ``merge``, and a 1x1 classifier on the sum of its levels (upsampled to
    the finest), upsampled to the input size. ``net(x)`` -> per-pixel class scores
    (N, classes, H, W)."""

    def __init__(self, stem, stages, classes, width=32, merge='AFF', r=4, **kwargs):
        super().__init__(**kwargs)
        if classes < 1:
            raise ValueError(f'classes must be at least 1, got {classes}')
        with self.name_scope():
            self.stem = stem
            self.stages = nn.HybridSequential(prefix='stages_')
            for stage in stages:
                self.stages.add(stage)
            self.pyramid = TopDownPyramid([width] * len(stages), merge, r, prefix='fpn_',
                                          norm_layer=nn.BatchNorm)
            self.classifier = nn.Conv2D(classes, 1, prefix='classifier_')

    def hybrid_forward(self, F, x):
        features, y = [], self.stem(x)
        for stage in self.stages:
            y = stage(y)
            features.append(y)
        levels = self.pyramid(*features)
        merged = levels[0]
        for level in levels[1:]:  # every level, upsampled to the finest (as Panoptic FPN)
            merged = merged + F.contrib.BilinearResize2D(level, like=levels[0], mode='like')
        return F.contrib.BilinearResize2D(self.classifier(merged), like=x, mode='like')
