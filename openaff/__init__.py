"""openaff: Attentional Feature Fusion (Dai, Gieseke, Oehmcke, Wu, Barnard, WACV 2021) for
MXNet/Gluon -- fusion blocks, residual blocks, model zoo and released checkpoints."""
from importlib import import_module

from ._stack import check_environment, check_stack
from ._threads import mxnet_on_all_cores

__version__ = "0.1.0"

check_stack()
check_environment()
with mxnet_on_all_cores():
    import_module('mxnet')  # it reads its CPU thread count once, here

from .fusion import get_fusion, list_fusions  # noqa: E402  (after the stack check)
from .zoo import get_model, list_models, model_info  # noqa: E402

__all__ = ['get_model', 'list_models', 'model_info', 'get_fusion', 'list_fusions',
           '__version__']
