"""The model zoo: one table of named configurations with what a user wants to know about each
(paper parameters, released checkpoint and its result, input size, normalisation, label set).

Networks of *Attentional Feature Fusion* (Dai et al., WACV 2021). Names follow timm's
``architecture.tag``: the architecture (``cifar_aff_resnet32``) and, after the dot, which
released weights (``.fine``, ``.coarse`` for the 20 CIFAR-100 superclasses, ``.imagenet``); the
architecture alone means its first release. ``get_model`` follows GluonCV: without
``pretrained`` the network is returned uninitialised (the training scripts initialise it); user
keyword arguments override the named configuration (timm's ``dict(model_args, **kwargs)``).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

from .data.cifar import CIFAR_MEAN, CIFAR_STD
from .data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from .models import AFFResNet, AFFResNeXt, CIFARAFFResNet, CIFARAFFResNeXt, CIFARInception

__all__ = ['ModelInfo', 'Release', 'get_model', 'list_models', 'model_info', 'released_for',
           'architecture', 'MODELS', 'ALIASES']



@dataclass(frozen=True)
class Release:
    """A checkpoint released with the original code (a file of ``YimianDai/open-aff``)."""
    path: str            # path in the repository, appended to the base URL
    blob_sha1: str       # git blob id: the download integrity check
    metric: str          # 'top1_acc' (CIFAR) or 'top1_err' (ImageNet)
    value: float         # as the file name states it
    note: str = ''


@dataclass(frozen=True)
class ModelInfo:
    """A named configuration of the zoo."""
    name: str
    title: str
    builder: type
    args: dict
    dataset: str                  # 'cifar100' or 'imagenet'
    labels: str                   # 'fine', 'coarse' (20 superclasses) or 'imagenet'
    input_size: int
    mean: tuple
    std: tuple
    paper_params_m: float | None  # trainable parameters, millions, as the README table says
    release: Release | None = None
    published: str = ''           # the published result, in words
    extra: dict = field(default_factory=dict)

    @property
    def classes(self):
        return self.args.get('classes', 1000)


_BASE = 'params/'
_CIFAR = dict(dataset='cifar100', input_size=32, mean=CIFAR_MEAN, std=CIFAR_STD)
_IMAGENET = dict(dataset='imagenet', labels='imagenet', input_size=224, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD)


def _cifar_resnet32(fusion):
    return dict(askc_type=fusion, start_layer=1, layers=[5, 5, 5], channels=[64, 64, 128, 256],
                classes=100, deep_stem=False)


def _cifar_resnet20(fusion):
    # He et al.'s ResNet-20 widths: quick experiments and the speed comparison at small widths
    return dict(_cifar_resnet32(fusion), layers=[3, 3, 3], channels=[16, 16, 32, 64])


def _cifar_inception(merge):
    return dict(askc_type=merge, layers=[2, 2, 2], channels=[32, 32, 64, 128], classes=100)


def _cifar_resnext(layers):
    return dict(askc_type='ASKCFuse', start_layer=1, layers=layers, channels=[64, 64, 128, 256],
                cardinality=32, bottleneck_width=4, classes=100, last_gamma=True)


def _imagenet_resnet50(fusion):
    return dict(askc_type=fusion, start_layer=3, layers=[3, 4, 6, 3], classes=1000,
                last_gamma=True)


def _imagenet_resnext50(fusion):
    # the original script never passed last_gamma to ResNeXt, whose block inverted the flag:
    # the released runs trained with zero-initialised last BN gammas
    return dict(askc_type=fusion, start_layer=3, layers=[3, 4, 6, 3], cardinality=32,
                bottleneck_width=4, classes=1000, use_se=False, last_gamma=True)


_ENTRIES = [
    ModelInfo('cifar_aff_resnet32.fine', 'AFF-ResNet-32 (CIFAR-100)', CIFARAFFResNet,
              _cifar_resnet32('ASKCFuse'), labels='fine', paper_params_m=7.9, **_CIFAR,
              release=Release(_BASE + 'cifar100/AFF-ResNet-32/'
                              '0.8357-cifar100-ASKCFuse-resnet-32-c-4-s-1-best.params',
                              'e5f9164dd45269fa776b65c4eb95308ff7465e80', 'top1_acc', 0.8357),
              published='83.57 % top-1 (fine labels)'),
    ModelInfo('cifar_aff_resnet32.coarse', 'AFF-ResNet-32 (CIFAR-100 superclasses)',
              CIFARAFFResNet, _cifar_resnet32('ASKCFuse'), labels='coarse', paper_params_m=7.9,
              **_CIFAR,
              release=Release(_BASE + 'cifar100/AFF-ResNet-32/superclasses/'
                              '0.9078-cifar100-cifar100-ASKCFuse-resnet-32-c-4-s-1-best.params',
                              '296ae7f3672ba26378122a05ed8ca3c332e60e8e', 'top1_acc', 0.9078,
                              'trained on the 20 coarse labels with a 100-way head'),
              published='90.78 % top-1 on the 20 superclasses (README: 90.8)'),
    ModelInfo('cifar_iaff_resnet32', 'iAFF-ResNet-32 (CIFAR-100)', CIFARAFFResNet,
              _cifar_resnet32('ResGlobLocaforGlobLocaCha'), labels='fine', paper_params_m=None,
              **_CIFAR, published='no released checkpoint'),
    ModelInfo('cifar_aff_resnet20', 'AFF-ResNet-20 (CIFAR-100)', CIFARAFFResNet,
              _cifar_resnet20('ASKCFuse'), labels='fine', paper_params_m=None, **_CIFAR,
              published='not in the paper: ResNet-20 widths'),
    ModelInfo('cifar_iaff_resnet20', 'iAFF-ResNet-20 (CIFAR-100)', CIFARAFFResNet,
              _cifar_resnet20('ResGlobLocaforGlobLocaCha'), labels='fine', paper_params_m=None,
              **_CIFAR, published='not in the paper: ResNet-20 widths'),
    ModelInfo('cifar_aff_inception', 'AFF-Inception (CIFAR-100)', CIFARInception,
              _cifar_inception('AFF'), labels='fine', paper_params_m=None, **_CIFAR,
              published='the paper\'s same-layer scenario; no released checkpoint'),
    ModelInfo('cifar_concat_inception', 'Inception, concatenation (CIFAR-100)', CIFARInception,
              _cifar_inception('concat'), labels='fine', paper_params_m=None, **_CIFAR,
              published='AFF-Inception\'s twin with concatenation, same parameter count'),
    ModelInfo('cifar_aff_resnext38_32x4d.coarse', 'AFF-ResNeXt-38-32x4d (CIFAR-100)', CIFARAFFResNeXt,
              _cifar_resnext([4, 4, 4]), labels='coarse', paper_params_m=7.8, **_CIFAR,
              release=Release(_BASE + 'cifar100/AFF-ResNeXt-38-32x4d/'
                              '0.9123-cifar100-ASKCFuse-resneXt-38-c-4-s-1-best.params',
                              '95e0478d1e66f3c65bf88e440e30631aaec08ced', 'top1_acc', 0.9123,
                              'labels not stated; the value matches the superclass runs'),
              published='91.23 % top-1 (README: 91.2; superclasses, inferred)'),
    ModelInfo('cifar_aff_resnext47_32x4d.fine', 'AFF-ResNeXt-47-32x4d (CIFAR-100)', CIFARAFFResNeXt,
              _cifar_resnext([5, 5, 5]), labels='fine', paper_params_m=9.7, **_CIFAR,
              release=Release(_BASE + 'cifar100/AFF-ResNeXt-47-32x4d/'
                              '0.8538-cifar100-ASKCFuse-resneXt-47-32x4-c-4-s-1-best.params',
                              'e8a6230d2fe602857292aba3b942f192d41af286', 'top1_acc', 0.8538),
              published='85.38 % top-1 (fine labels)'),
    ModelInfo('cifar_aff_resnext47_32x4d.coarse', 'AFF-ResNeXt-47-32x4d (CIFAR-100 superclasses)',
              CIFARAFFResNeXt, _cifar_resnext([5, 5, 5]), labels='coarse', paper_params_m=9.7,
              **_CIFAR,
              release=Release(_BASE + 'cifar100/AFF-ResNeXt-47-32x4d/superclass/'
                              '0.9184-cifar100-ASKCFuse-resneXt-47-32x4-c-4-s-1-best.params',
                              '764e2ec951bf7e4fb3738b381f7c204b528db333', 'top1_acc', 0.9184,
                              'trained on the 20 coarse labels with a 100-way head'),
              published='91.84 % top-1 on the 20 superclasses (README: 91.8)'),
    ModelInfo('aff_resnet50.imagenet', 'AFF-ResNet-50 (ImageNet)', AFFResNet,
              _imagenet_resnet50('ASKCFuse'), paper_params_m=30.3, **_IMAGENET,
              release=Release(_BASE + 'imagenet/AFF-ResNet-50/'
                              '0.2028-imagenet-ImageNet-ASKCFuse-resnet--50-s-3-235-best.params',
                              'aedcb94bc954b03fccedaace6ae33a85c0831eb3', 'top1_err', 0.2028),
              published='20.28 % top-1 error (README: 20.3)'),
    ModelInfo('iaff_resnet50.imagenet', 'iAFF-ResNet-50 (ImageNet)', AFFResNet,
              _imagenet_resnet50('ResGlobLocaforGlobLocaCha'), paper_params_m=35.1, **_IMAGENET,
              release=Release(_BASE + 'imagenet/iAFF-ResNet-50/0.2022-imagenet-ImageNet-'
                              'ResGlobLocaforGlobLocaCha-resnet--50-s-3-238-best.params',
                              '8f0e020af632bb0f83e19b667894a783cbec4450', 'top1_err', 0.2022),
              published='20.22 % top-1 error (README: 20.2)'),
    ModelInfo('aff_resnext50_32x4d.imagenet', 'AFF-ResNeXt-50-32x4d (ImageNet)', AFFResNeXt,
              _imagenet_resnext50('ASKCFuse'), paper_params_m=29.9, **_IMAGENET,
              release=Release(_BASE + 'imagenet/AFF-ResNeXt-50/'
                              '0.2028-imagenet-ImageNet-ASKCFuse-resnext--50-s-3-231-best.params',
                              '2dbc5a055fabfb2d37e451b02ef6cad8b04bb709', 'top1_err', 0.2028),
              published='20.28 % top-1 error'),
    ModelInfo('iaff_resnext50_32x4d.imagenet', 'iAFF-ResNeXt-50-32x4d (ImageNet)', AFFResNeXt,
              _imagenet_resnext50('ResGlobLocaforGlobLocaCha'), paper_params_m=34.7, **_IMAGENET,
              release=Release(_BASE + 'imagenet/iAFF-ResNeXt-50/0.1978-imagenet-ImageNet-'
                              'ResGlobLocaforGlobLocaCha-resnext--50-s-3-238-best.params',
                              '769c70323f536e7cb89eaf246631f36515249e36', 'top1_err', 0.1978,
                              'trained at input 320 first, then 224'),
              published='19.78 % top-1 error (README: 19.78)'),
]

MODELS = {info.name: info for info in _ENTRIES}


def architecture(name):
    """``'cifar_aff_resnet32.coarse'`` -> ``'cifar_aff_resnet32'``."""
    return name.split('.', 1)[0]


# an architecture alone names its first release; the earlier names of the superclass weights
ALIASES = {**{architecture(n): n for n in reversed(list(MODELS)) if '.' in n},
           'cifar_aff_resnet32_coarse': 'cifar_aff_resnet32.coarse',
           'cifar_aff_resnext47_32x4d_coarse': 'cifar_aff_resnext47_32x4d.coarse'}


def list_models(pretrained=False):
    """Architecture names accepted by :func:`get_model`, in table order; with ``pretrained``,
    the ``architecture.tag`` names of every released checkpoint."""
    if pretrained:
        return [name for name, info in MODELS.items() if info.release]
    return list(dict.fromkeys(architecture(name) for name in MODELS))


def model_info(name) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo name (``architecture`` or ``architecture.tag``); unknown
    names raise ``ValueError`` listing the valid ones."""
    canonical = None
    if isinstance(name, str):
        canonical = name if name in MODELS else ALIASES.get(name)
    if canonical is None:
        raise ValueError(f'unknown model {name!r}; valid names: '
                         f'{", ".join(list_models() + list_models(pretrained=True))}')
    return MODELS[canonical]


def released_for(builder, **args):
    """The zoo entry with a released checkpoint built by ``builder`` with ``args`` (e.g.
    ``askc_type='ASKCFuse'``); ``ValueError`` when there is none."""
    for info in MODELS.values():
        if info.release and info.builder is builder and \
                all(info.args.get(key) == value for key, value in args.items()):
            return info
    raise ValueError(f'no released checkpoint for {builder.__name__} with {args}')


def _check_arguments(info, kwargs):
    """Unknown constructor arguments as a one-line ``ValueError`` naming the valid ones."""
    accepted = [p for p in inspect.signature(info.builder.__init__).parameters.values()
                if p.name != 'self' and p.kind is not p.VAR_KEYWORD] + \
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in ('prefix', 'params')]
    unknown = sorted(set(kwargs) - {p.name for p in accepted})
    if unknown:
        raise ValueError(f'{info.name}: unknown argument(s) {", ".join(unknown)}; valid: '
                         f'{", ".join(p.name for p in accepted)}')


def get_model(name, pretrained: bool | str = False, root='~/.mxnet/models', ctx=None,
              skip_classifier=False, **kwargs: Any):
    """Build a zoo network, optionally with released or local weights.

    Parameters
    ----------
    name : str
        A name of :func:`list_models`, e.g. ``'aff_resnet50'``.
    pretrained : bool or str
        ``True`` fetches the released checkpoint (base URL from ``OPENAFF_BASE_URL``, cached
        under ``root`` and verified by its git blob SHA-1); a path loads that local file.
    root : str
        Cache directory for released checkpoints.
    ctx : Context or list of Context
        Where the loaded parameters live (default CPU); only with ``pretrained`` (an
        uninitialised network has no parameters to place: ``net.initialize(ctx=...)``).
    skip_classifier : bool
        Keep the classifier's own initialisation instead of loading it (e.g. a checkpoint for
        another class count).
    **kwargs
        Override constructor arguments of the named configuration (``classes=10``,
        ``norm_layer=...``).

    Returns
    -------
    HybridBlock
        The network, with ``net.model_info`` set. Without ``pretrained`` it is not initialised.
    """
    info = model_info(name)
    _check_arguments(info, kwargs)
    if ctx is not None and not pretrained:
        raise ValueError('ctx places loaded weights and needs pretrained; without weights, '
                         'initialise where you want them: net.initialize(ctx=...)')
    net = info.builder(**{**info.args, **kwargs})
    net.model_info = replace(info, args={**info.args, **kwargs})
    if pretrained:
        from . import store
        if pretrained is True:
            if info.release is None:
                raise ValueError(f'{name!r} has no released checkpoint; models with one: '
                                 f'{", ".join(list_models(pretrained=True))}')
            path = store.fetch_release(info.release.path, info.release.blob_sha1, root=root)
        else:
            path = str(pretrained)
        store.load_checkpoint(net, path, ctx=ctx, skip_classifier=skip_classifier)
    return net
