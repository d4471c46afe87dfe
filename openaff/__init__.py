"""openaff: Attentional Feature Fusion (Dai, Gieseke, Oehmcke, Wu, Barnard, WACV 2021) for
MXNet/Gluon -- fusion blocks, residual blocks, model zoo and released checkpoints.

The submodules the README uses (``openaff.store``, ``openaff.apps.cam``, ``openaff.apps.export``,
...) are attributes of the package, imported on first use (``openaff.apps.export`` does not
import onnx until a network is exported). GluonCV's model zoo knows openaff's names once
``gluoncv.model_zoo`` is imported (:func:`register_gluoncv`).
"""
from importlib import import_module

from ._stack import check_environment, check_stack
from ._threads import mxnet_on_all_cores

__version__ = "0.1.0"

check_stack()
check_environment()
with mxnet_on_all_cores():
    import_module('mxnet')  # it reads its CPU thread count once, here

from .fusion import get_fusion, list_fusions  # noqa: E402  (after the stack check)
from .zoo import (  # noqa: E402
    _register_gluoncv_on_import,
    get_model,
    get_model_list,
    list_models,
    model_info,
    pretrained_model_list,
    register_gluoncv,
)

# harmless at import: it imports nothing, and adds only names GluonCV lacks, when GluonCV's
# zoo is imported (at once if it already is)
_register_gluoncv_on_import()

__all__ = ['get_model', 'list_models', 'get_model_list', 'pretrained_model_list', 'model_info',
           'register_gluoncv', 'get_fusion', 'list_fusions', 'quantize', '__version__']

# imported when first used: some are slow (matplotlib, gluoncv) and none is needed to build a
# net; the tools of openaff.apps are reachable under their short names too
_LAZY_SUBMODULES = frozenset({
    'apps', 'batchnorm', 'blocks', 'data', 'engine', 'fpn', 'fusion', 'models', 'ops',
    'plotting', 'segmentation', 'store', 'zoo'})
_APPS = frozenset({'benchmark', 'cam', 'compare', 'evaluate', 'export', 'launch', 'plotlog',
                   'summary'})


def __getattr__(name):
    if name == 'quantize':  # the function (INT8 for oneDNN): openaff.apps.quantize.quantize
        return import_module('.apps.quantize', __name__).quantize
    if name in _LAZY_SUBMODULES:
        return import_module(f'.{name}', __name__)
    if name in _APPS:
        return import_module(f'.apps.{name}', __name__)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | _LAZY_SUBMODULES | _APPS | {'quantize'})
