"""ONNX export of AFF/iAFF networks and fusion blocks (Dai et al., WACV 2021), checked by
running the file with onnxruntime against MXNet.

The exported graph is built from standard operators (:func:`openaff.fusion.exportable` with the
``fast`` algebra): the fused native operator has no ONNX conversion. MXNet 1.9.1's exporter
writes the stored gamma of a ``BatchNorm(scale=False)`` although MXNet itself uses 1 there
(``fix_gamma``); those gammas are written as 1, so networks whose input BatchNorm was loaded or
trained export correctly.

    from openaff.apps.export import export_onnx
    report = export_onnx(get_model('cifar_aff_resnet32', pretrained=True), 'aff32.onnx',
                         input_shape=(1, 3, 32, 32))
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from ..fusion import exportable, implementation

__all__ = ['ExportReport', 'ExportMismatchError', 'export_onnx', 'ERROR_FACTOR', 'ERROR_FLOOR']

# An export is judged as the training-parity tests judge gradients: the truth is a float64
# forward of the same graph, and onnxruntime may err up to ERROR_FACTOR times MXNet's own
# float32 error. A deep network's float32 output drifts from float64 by 2-4e-4 of its scale
# with trained BatchNorm states, so no fixed tolerance fits every depth; ERROR_FLOOR (relative
# to the output scale) covers outputs that float32 happens to get almost exact.
ERROR_FACTOR = 3.0
ERROR_FLOOR = 1e-6


class ExportMismatchError(RuntimeError):
    """onnxruntime's outputs are further from the float64 truth than MXNet's float32 allows."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and measured: the largest error of onnxruntime's and of
    MXNet's float32 outputs against a float64 forward of the same graph, relative to the
    largest output magnitude."""
    path: str
    opset: int
    input_shapes: list
    onnx_error: float
    mxnet_error: float
    size_mb: float

    @property
    def allowed(self):
        return ERROR_FACTOR * max(self.mxnet_error, ERROR_FLOOR)

    def __str__(self):
        return (f'{self.path}: opset {self.opset}, inputs {self.input_shapes}, '
                f'{self.size_mb:.1f} MB; error against a float64 forward, relative to the '
                f'largest output: onnxruntime {self.onnx_error:.2e}, MXNet float32 '
                f'{self.mxnet_error:.2e} (allowed {self.allowed:.2e})')


def _fixed_gamma_inputs(symbol_json):
    """Names of the gamma inputs of BatchNorm nodes that MXNet runs with ``fix_gamma``."""
    graph = json.loads(symbol_json)
    nodes = graph['nodes']
    names = set()
    for node in nodes:
        attrs = node.get('attrs', {})
        if node['op'] == 'BatchNorm' and attrs.get('fix_gamma', 'True') in ('True', 'true', '1'):
            names.add(nodes[node['inputs'][1][0]]['name'])
    return names


def _exported_graph(net, inputs):
    """(symbol, {name: NDArray} params) of ``net`` built from exportable operators, and its
    MXNet outputs on ``inputs``."""
    was_active, flags = getattr(net, '_active', False), dict(getattr(net, '_flags', []))
    net.hybridize()  # a fresh graph, built below from exportable operators
    with implementation('fast'), exportable():
        outputs = net(*inputs)
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, 'net')
        net.export(prefix)
        symbol = mx.sym.load(prefix + '-symbol.json')
        saved = mx.nd.load(prefix + '-0000.params')
    net.hybridize(was_active, **flags)  # later calls build the net's usual graph again
    saved = saved or {}  # a block without parameters saves an empty list
    params = {key.split(':', 1)[1]: value for key, value in saved.items()}
    for name in _fixed_gamma_inputs(symbol.tojson()):
        if name in params:
            params[name] = mx.nd.ones_like(params[name])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return symbol, params, [o.asnumpy() for o in outputs]


def _float64_outputs(symbol, params, names, arrays):
    """The graph's outputs computed in float64 by MXNet (its CPU kernels for float64 do not go
    through oneDNN): the reference both float32 runtimes are judged against."""
    import warnings
    with warnings.catch_warnings():  # SymbolBlock warns that it cannot infer input types
        warnings.simplefilter('ignore')
        block = mx.gluon.SymbolBlock(symbol, [mx.sym.var(name) for name in names])
    block.cast('float64')
    block_params = block.collect_params()
    for name, value in params.items():
        if name in block_params:
            block_params[name]._load_init(value.astype('float64'), mx.cpu())
    outputs = block(*[mx.nd.array(a, dtype='float64') for a in arrays])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [o.asnumpy() for o in outputs]


def _largest_error(outputs, truth, scale):
    return max(float(np.abs(o.astype(np.float64) - t).max()) for o, t in zip(outputs, truth)) \
        / scale


def _weights_as_constants(onnx, path):
    """Drop the weights from the graph's inputs (MXNet's exporter lists them there, which
    keeps onnxruntime from folding constants and makes it warn per weight); returns the opset."""
    model = onnx.load(path)
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.save(model, path)
    return max(o.version for o in model.opset_import)


def export_onnx(net, path, input_shape=(1, 3, 224, 224), num_inputs=1, dynamic_batch=True,
                seed=0) -> ExportReport:
    """Export an initialised ``net`` (a zoo network, a fusion block taking ``num_inputs`` maps
    of ``input_shape``) to ONNX at ``path``; check the file with onnx's checker and run it
    with onnxruntime on a random batch, beside MXNet in float32 and in float64. Returns an
    :class:`ExportReport`; raises :class:`ExportMismatchError` (leaving the file for
    inspection) when onnxruntime is further from the float64 outputs than ``ERROR_FACTOR``
    times MXNet's own float32 error."""
    import onnx
    import onnxruntime
    rng = np.random.RandomState(seed)
    arrays = [rng.uniform(-1, 1, size=input_shape).astype('float32') for _ in range(num_inputs)]
    symbol, params, expected = _exported_graph(net, [mx.nd.array(a) for a in arrays])
    # Gluon names the inputs of an exported graph by call position (list_inputs() gives them
    # in graph order, which can differ)
    names = ['data'] if num_inputs == 1 else [f'data{i}' for i in range(num_inputs)]
    shapes = [tuple(input_shape)] * num_inputs
    dynamic = [(None,) + tuple(input_shape[1:])] * num_inputs if dynamic_batch else None
    mx.onnx.export_model(symbol, params, shapes, [np.float32] * num_inputs, path,
                         dynamic=dynamic_batch, dynamic_input_shapes=dynamic)
    opset = _weights_as_constants(onnx, path)
    onnx.checker.check_model(path)
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = dict(zip(names, arrays))  # onnxruntime may list the inputs in another order
    got = session.run(None, feed)
    if dynamic_batch:  # another batch size runs too
        other = {name: np.concatenate([a, a[:1]]) for name, a in feed.items()}
        if session.run(None, other)[0].shape[0] != input_shape[0] + 1:
            raise ExportMismatchError(f'{path}: the batch dimension is not dynamic')
    truth = _float64_outputs(symbol, params, names, arrays)
    scale = max(1e-12, max(float(np.abs(t).max()) for t in truth))
    report = ExportReport(path, opset, [list(s) for s in shapes],
                          _largest_error(got, truth, scale), _largest_error(expected, truth, scale),
                          os.path.getsize(path) / 2 ** 20)
    if report.onnx_error > report.allowed:
        raise ExportMismatchError(f'{report}: onnxruntime is further from the float64 outputs '
                                  f'than {ERROR_FACTOR:g}x MXNet\'s own float32 error')
    return report

