"""The model zoo: one table of named configurations with what a user wants to know about each
(paper parameters, released checkpoint and its result, input size, normalisation, label set).

Networks of *Attentional Feature Fusion* (Dai et al., WACV 2021). Names follow timm's
``architecture.tag``: the architecture (``cifar_aff_resnet32``) and, after the dot, which
released weights (``.fine``, ``.coarse`` for the 20 CIFAR-100 superclasses, ``.imagenet``); the
architecture alone means its first release. ``get_model`` follows GluonCV: without
``pretrained`` the network is returned uninitialised (the training scripts initialise it) and
``ctx`` is not used; user keyword arguments override the named configuration (timm's
``dict(model_args, **kwargs)``). :func:`register_gluoncv` puts every name into GluonCV's own
model zoo, so ``gluoncv.model_zoo.get_model('aff_resnet50', pretrained=True)`` works too.
"""
from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import mxnet as mx
from mxnet.gluon import HybridBlock

from .data.cifar import CIFAR_MEAN, CIFAR_STD
from .data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from .models import AFFResNet, AFFResNeXt, CIFARAFFResNet, CIFARAFFResNeXt, CIFARInception

__all__ = ['ModelInfo', 'Release', 'get_model', 'list_models', 'get_model_list',
           'pretrained_model_list', 'model_info', 'released_for', 'register_gluoncv',
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
    ModelInfo('cifar_aff_resnext38_32x4d.coarse', 'AFF-ResNeXt-38-32x4d (CIFAR-100)',
              CIFARAFFResNeXt, _cifar_resnext([4, 4, 4]), labels='coarse', paper_params_m=7.8,
              **_CIFAR,
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


def list_models(pretrained: bool = False) -> list[str]:
    """Architecture names accepted by :func:`get_model`, in table order; with ``pretrained``,
    the ``architecture.tag`` names of every released checkpoint."""
    if pretrained:
        return [name for name, info in MODELS.items() if info.release]
    return list(dict.fromkeys(architecture(name) for name in MODELS))


def get_model_list() -> list[str]:
    """Every name :func:`get_model` takes (architectures, then ``architecture.tag`` names),
    as ``gluoncv.model_zoo.get_model_list`` lists GluonCV's."""
    return list(dict.fromkeys(list_models() + list(MODELS)))


def pretrained_model_list() -> list[str]:
    """Every name :func:`get_model` takes with ``pretrained=True`` (architectures with a
    release, then the ``architecture.tag`` names), as
    ``gluoncv.model_zoo.pretrained_model_list`` lists GluonCV's."""
    released = list_models(pretrained=True)
    return [arch for arch in list_models() if ALIASES.get(arch) in released] + released


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo name (``architecture`` or ``architecture.tag``); unknown
    names raise ``ValueError`` listing the valid ones, a name that is not a string
    ``TypeError``."""
    if not isinstance(name, str):
        raise TypeError(f'a model name is a str (e.g. {list_models()[0]!r}), got '
                        f'{type(name).__name__}')
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


def get_model(name: str, pretrained: bool | str | os.PathLike = False,
              root: str | os.PathLike | None = None,
              ctx: mx.Context | Sequence[mx.Context] | None = None,
              skip_classifier: bool = False, **kwargs: Any) -> HybridBlock:
    """Build a zoo network, optionally with released or local weights.

    Parameters
    ----------
    name : str
        A name of :func:`get_model_list`, e.g. ``'aff_resnet50'``.
    pretrained : bool or str or path-like
        ``True`` fetches the released checkpoint (base URL from ``OPENAFF_BASE_URL``, cached
        under ``root`` and verified by its git blob SHA-1); a path loads that local file.
    root : str or path-like, optional
        Cache directory for released checkpoints; default ``$MXNET_HOME/models``, else
        ``~/.mxnet/models`` (:func:`openaff.store.default_root`), as GluonCV's.
    ctx : Context or list of Context, optional
        Where the loaded parameters live (default CPU). As in GluonCV, it is not used without
        ``pretrained``: an uninitialised network has no parameters to place, so call
        ``net.initialize(ctx=...)``.
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

    Raises
    ------
    TypeError
        ``name`` is not a string, ``pretrained`` not a bool or path, or ``ctx`` not a
        context or list of them (``'cpu'`` is a string: pass ``mx.cpu()``).
    ValueError
        An unknown name or constructor argument, or ``pretrained=True`` for a name without a
        released checkpoint.
    """
    from . import store
    info = model_info(name)
    if not isinstance(pretrained, bool | str | os.PathLike):
        raise TypeError(f'pretrained must be True/False or the path of a .params file, got '
                        f'{type(pretrained).__name__}')
    store.check_ctx(ctx)
    _check_arguments(info, kwargs)
    net = info.builder(**{**info.args, **kwargs})
    net.model_info = replace(info, args={**info.args, **kwargs})
    if pretrained:
        if pretrained is True:
            if info.release is None:
                raise ValueError(f'{name!r} has no released checkpoint; models with one: '
                                 f'{", ".join(list_models(pretrained=True))}')
            path = store.fetch_release(info.release.path, info.release.blob_sha1, root=root)
        else:
            path = os.fspath(pretrained)
        store.load_checkpoint(net, path, ctx=ctx, skip_classifier=skip_classifier)
    return net


def _gluoncv_builder(name, pretrained=False, ctx=None, root=None, **kwargs):
    """A zoo name as a GluonCV model-zoo entry: the ``pretrained``, ``ctx`` and ``root`` that
    GluonCV's users pass to every model are honoured as :func:`get_model` takes them."""
    return get_model(name, pretrained=pretrained, ctx=ctx, root=root, **kwargs)


def register_gluoncv() -> list[str]:
    """Add every zoo name (those of :func:`get_model_list` and the older aliases) to GluonCV's
    model zoo, so ``gluoncv.model_zoo.get_model(name, pretrained=..., ctx=..., root=...)``
    builds the openaff network and ``gluoncv.model_zoo.get_model_list()`` lists it.

    GluonCV 0.10.5 keeps its builders in the module dictionary
    ``gluoncv.model_zoo.model_zoo._models``, which its ``get_model`` reads at each call; a name
    GluonCV already has is left to GluonCV. Calling it again changes nothing. ``import
    openaff`` calls it when ``gluoncv.model_zoo`` is (or later gets) imported.

    Returns
    -------
    list of str
        The names now served by openaff.
    """
    from gluoncv.model_zoo import model_zoo as gluoncv_zoo
    return _register_in(gluoncv_zoo._models)


def _register_in(builders):
    served = []
    for name in get_model_list() + list(ALIASES):
        current = builders.get(name)
        if current is None or getattr(current, '_openaff_name', None) == name:
            builder = functools.partial(_gluoncv_builder, name)
            builder._openaff_name = name  # marks our own entries, which may be replaced
            builders[name] = builder
            served.append(name)
    return list(dict.fromkeys(served))


_GLUONCV_ZOO = 'gluoncv.model_zoo.model_zoo'  # the module that holds GluonCV's _models


def _register_quietly(module):
    try:
        _register_in(module._models)
    except Exception as err:  # pylint: disable=broad-except
        # a GluonCV whose zoo has changed shape must still import: only our names are lost
        import warnings
        warnings.warn(f'openaff: could not add its models to GluonCV\'s zoo ({err!r}); '
                      f'gluoncv.model_zoo.get_model will not know them', RuntimeWarning,
                      stacklevel=2)


class _AfterGluonCVZoo:
    """A one-shot import hook: lets GluonCV's zoo module run, then adds openaff's names. It
    imports nothing itself, so ``import openaff`` does not pay for GluonCV (scipy and some 300
    modules) when nobody uses it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _GLUONCV_ZOO:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, 'find_spec', None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        loader = getattr(spec, 'loader', None)
        if loader is None or not hasattr(loader, 'exec_module'):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _register_quietly(module)

        loader.exec_module = exec_module
        return spec


def _register_gluoncv_on_import():
    """What ``import openaff`` does: :func:`register_gluoncv` now if GluonCV's zoo is
    imported, else as soon as it is (an import hook that removes itself)."""
    if _GLUONCV_ZOO in sys.modules:
        _register_quietly(sys.modules[_GLUONCV_ZOO])
    elif not any(isinstance(finder, _AfterGluonCVZoo) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterGluonCVZoo())
