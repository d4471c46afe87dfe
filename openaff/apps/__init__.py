"""Tools built on the library (Dai et al., "Attentional Feature Fusion", WACV 2021): speed
(:mod:`.benchmark`), training comparisons with GluonCV baselines (:mod:`.compare`), evaluation
(:mod:`.evaluate`), ONNX export (:mod:`.export`), attention maps (:mod:`.cam`), parameter and
FLOP tables (:mod:`.summary`), log plots (:mod:`.plotlog`), the parameter-server launcher
(:mod:`.launch`) and INT8 inference (:mod:`.quantize`). Their commands are in :mod:`openaff.cli`."""
from importlib import import_module

_TOOLS = frozenset({'benchmark', 'cam', 'compare', 'evaluate', 'export', 'launch', 'plotlog',
                    'quantize', 'summary'})


def __getattr__(name):
    # imported on first use: the tools pull in matplotlib, gluoncv or onnx
    if name in _TOOLS:
        return import_module(f'.{name}', __name__)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
