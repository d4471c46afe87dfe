"""INT8 inference on the CPU for the networks of *Attentional Feature Fusion* (Dai et al., WACV
2021, arXiv:2009.14082) and GluonCV's, with MXNet 1.9.1's oneDNN quantization.

    import openaff

    net = openaff.get_model('cifar_aff_resnet32', pretrained=True)
    int8 = openaff.quantize(net, calib_images)         # (N, 3, 32, 32) training images, normalised
    int8.hybridize(static_alloc=True, static_shape=True)
    logits = int8(batch)                       # float32 images in, float32 logits out

:func:`quantize` traces the network as a graph of standard MXNet operators (the fused C++
operators of :mod:`openaff.ops` are float32-only), partitions it for oneDNN, quantizes the
convolutions (BatchNorms and ReLUs folded in), residual sums, pooling and classifier, calibrates
the activation ranges on ``calib_data`` and returns a :class:`QuantizedNet`. MS-CAM's sigmoid
and AFF's soft selection have no INT8 form in MXNet: they stay float32 between a dequantization
of their inputs and a quantization of their output. ``graph='fused'`` computes each selection
with openaff's fused float32 operator instead (faster; the graph then runs only in processes
that import openaff). Where MXNet's INT8 graph is wrong or slow it is rewritten here; what,
why, and the measurements: ``docs/int8.md``.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import numbers
import os
import sys
import tempfile
import warnings
import zlib

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, SymbolBlock

__all__ = ['quantize', 'quantize_checkpoint', 'evaluate_int8', 'QuantizedNet', 'OnnxRuntimeNet',
           'CALIB_MODES', 'GRAPHS', 'check_calibration', 'float_graph', 'quantize_symbol',
           'report_int8']

CALIB_MODES = ('naive', 'entropy')
GRAPHS = ('standard', 'fused')


# ----------------------------------------------------------------------------------------------
# calibration data


def _as_numpy(value):
    if isinstance(value, mx.nd.NDArray):
        return value.asnumpy()
    return np.asarray(value)


def _batches_of(calib_data):
    """The image arrays of ``calib_data``: one array, or an iterable of batches (a Gluon
    ``DataLoader`` of ``(data, label)``, a list of arrays) or an ``mx.io.DataIter``."""
    if isinstance(calib_data, mx.nd.NDArray | np.ndarray):
        yield _as_numpy(calib_data)
        return
    if isinstance(calib_data, mx.io.DataIter):
        calib_data.reset()
        for batch in calib_data:
            yield _as_numpy(batch.data[0])
        return
    if calib_data is None or isinstance(calib_data, str | bytes | numbers.Number):
        raise ValueError(f'calib_data must be an array of images (N, C, H, W) or an iterable of '
                         f'batches, got {type(calib_data).__name__}')
    try:
        items = iter(calib_data)
    except TypeError:
        raise ValueError(f'calib_data must be an array of images (N, C, H, W) or an iterable '
                         f'of batches, got {type(calib_data).__name__}') from None
    for item in items:
        if isinstance(item, list | tuple):  # (data, label) from a DataLoader
            if not item:
                raise ValueError('calib_data yielded an empty batch')
            item = item[0]
        yield _as_numpy(item)


def input_channels(net):
    """The number of input channels ``net`` expects, or None when its first convolution has
    no shape yet (deferred initialisation)."""
    for param in net.collect_params().values():
        shape = param.shape or ()  # a SymbolBlock's are None until its first call
        if param.name.endswith('weight') and len(shape) == 4:
            return shape[1] or None
    return None


def check_calibration(calib_data, net=None, num_calib_examples=None):
    """The calibration images of ``calib_data`` as one float32 array ``(N, C, H, W)``, at most
    ``num_calib_examples`` of them; a one-line ``ValueError`` when they cannot calibrate
    ``net``: none at all, not 4-D, batches of different image shapes, another channel count
    than the network's first convolution, images smaller than the network takes, or values
    that are not finite (a NaN would make every range NaN)."""
    if num_calib_examples is not None and not (
            isinstance(num_calib_examples, numbers.Integral) and num_calib_examples >= 1):
        raise ValueError(f'num_calib_examples must be a positive int or None, got '
                         f'{num_calib_examples!r}')
    arrays, count = [], 0
    for array in _batches_of(calib_data):
        if array.ndim != 4:
            raise ValueError(f'calibration batches must be (N, C, H, W) images; got shape '
                             f'{tuple(array.shape)}')
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f'calibration batches must share one image shape; got '
                             f'{tuple(arrays[0].shape[1:])} and {tuple(array.shape[1:])}')
        if array.shape[0] == 0:
            continue
        arrays.append(array)
        count += array.shape[0]
        if num_calib_examples is not None and count >= num_calib_examples:
            break
    if not count:
        raise ValueError('the calibration set is empty: quantize needs at least one image')
    images = np.concatenate(arrays)[:num_calib_examples]
    if not np.issubdtype(images.dtype, np.floating) and not np.issubdtype(images.dtype,
                                                                          np.integer):
        raise ValueError(f'calibration images must be numbers, got dtype {images.dtype}')
    images = images.astype('float32', copy=False)
    if net is not None:
        channels = input_channels(net)
        if channels and images.shape[1] != channels:
            hint = ' (channels last? transpose to (N, C, H, W))' \
                if images.shape[3] == channels else ''
            raise ValueError(f'calibration images have {images.shape[1]} channels, the network '
                             f'takes {channels}: shape {tuple(images.shape)}{hint}')
        smallest = getattr(net, 'min_input_size', 1)
        if min(images.shape[2:]) < smallest:
            raise ValueError(f'calibration images of {images.shape[2]}x{images.shape[3]} are '
                             f'smaller than the {smallest}x{smallest} the network takes')
    bad = ~np.isfinite(images)
    if bad.any():
        raise ValueError(f'the calibration set holds {int(bad.sum())} values that are not '
                         f'finite (NaN or inf), in {int(bad.reshape(len(images), -1).any(1).sum())}'
                         f' of its {len(images)} images')
    return images


# ----------------------------------------------------------------------------------------------
# the float32 graph


class _Graph:
    """An MXNet symbol as its JSON node list, for rewrites: uses are redirected, and
    :meth:`symbol` keeps the nodes the outputs still reach, in topological order."""

    def __init__(self, symbol):
        self.data = json.loads(symbol.tojson())
        self.nodes = self.data['nodes']

    def redirect(self, old, new):
        """Every use of the output entry ``old`` reads ``new`` instead."""
        def swap(entries):
            return [list(new) if e[:2] == old[:2] else e for e in entries]
        for node in self.nodes:
            node['inputs'] = swap(node['inputs'])
        self.data['heads'] = swap(self.data['heads'])

    def symbol(self):
        order, seen = [], set()
        for head in self.data['heads']:
            stack = [(head[0], False)]
            while stack:
                index, done = stack.pop()
                if done:
                    order.append(index)
                elif index not in seen:
                    seen.add(index)
                    stack.append((index, True))
                    stack.extend((e[0], False) for e in reversed(self.nodes[index]['inputs'])
                                 if e[0] not in seen)
        position = {old: new for new, old in enumerate(order)}
        nodes = [dict(self.nodes[old], inputs=[[position[e[0]], e[1], e[2]]
                                               for e in self.nodes[old]['inputs']])
                 for old in order]
        data = {'nodes': nodes, 'attrs': self.data.get('attrs', {}),
                'arg_nodes': [i for i, node in enumerate(nodes) if node['op'] == 'null'],
                'heads': [[position[e[0]], e[1], e[2]] for e in self.data['heads']]}
        return mx.sym.load_json(json.dumps(data))


def _nodes(symbol):
    return json.loads(symbol.tojson())['nodes']


def _param_value(param):
    value = param.data(param.list_ctx()[0]).as_in_context(mx.cpu())
    return value.astype('float32', copy=False)


def _trace(net):
    out = net(mx.sym.var('data'))
    return mx.sym.Group(list(out)) if isinstance(out, list | tuple) else out


def float_graph(net, example=None, graph='standard'):
    """``(symbol, arg_params, aux_params)``: ``net`` as a float32 MXNet graph with input
    ``data``, its parameters as float32 CPU arrays. ``example`` (a batch) gives deferred
    parameters their shapes.

    ``graph='standard'``: standard operators only, traced as :mod:`openaff.apps.export` traces for
    ONNX (:func:`openaff.fusion.exportable`, the ``fast`` algebra: MXNet's pooling operator,
    ``concat``). ``graph='fused'``: traced for a CPU float32 target
    (:func:`openaff.fusion.graph_target`), so that each AFF/iAFF soft selection is openaff's
    fused operator; its global pooling is MXNet's ``Pooling`` (it has an INT8 form, adaptive
    pooling has none) and the layout copies before the operator are dropped (in an INT8 graph
    its inputs come from dequantizations, which write plain float32 maps)."""
    from ..fusion import exportable, graph_target, implementation
    _check_network(net)
    _check_modes(graph=graph)
    params = net.collect_params()
    empty = [p.name for p in params.values() if p._data is None and not p._deferred_init]
    if empty:
        raise ValueError(f'{type(net).__name__} has parameters without values ({empty[0]}, '
                         f'{len(empty)} in all): initialize it or load weights first')
    if any(p._data is None for p in params.values()):
        if example is None:
            raise ValueError('the network has deferred parameters: give an example batch')
        with mx.autograd.pause(train_mode=False):
            net(mx.nd.array(example[:1]))
    if graph == 'fused':
        with graph_target(mx.cpu()):
            symbol = _fused_cleanup(_trace(net))
    else:
        with implementation('fast'), exportable():
            symbol = _trace(net)
    args, auxs = set(symbol.list_arguments()), set(symbol.list_auxiliary_states())
    arg_params = {p.name: _param_value(p) for p in params.values() if p.name in args}
    aux_params = {p.name: _param_value(p) for p in params.values() if p.name in auxs}
    return symbol, arg_params, aux_params


def _check_network(net):
    if not isinstance(net, HybridBlock):
        raise ValueError(f'quantize takes a Gluon HybridBlock, got {type(net).__name__}')


def _check_modes(calib_mode='naive', graph='standard'):
    if calib_mode not in CALIB_MODES:
        raise ValueError(f'calib_mode must be one of {CALIB_MODES}, got {calib_mode!r}')
    if graph not in GRAPHS:
        raise ValueError(f'graph must be one of {GRAPHS}, got {graph!r}')


def _fused_cleanup(symbol):
    graph = _Graph(symbol)
    for index, node in enumerate(graph.nodes):
        attrs = node.get('attrs', {})
        if node['op'] == '_contrib_AdaptiveAvgPooling2D' and \
                attrs.get('output_size', '1').strip('()[], ') in ('1', '1, 1'):
            node['op'] = 'Pooling'
            node['attrs'] = {'global_pool': 'True', 'kernel': '(1, 1)', 'pool_type': 'avg'}
        elif node['op'] == 'transpose' and \
                attrs.get('axes', '').replace(' ', '') in ('(0,1,2,3)', '[0,1,2,3]'):
            graph.redirect([index, 0, 0], node['inputs'][0])  # native.plain_copy: identity
    return graph.symbol()


# ----------------------------------------------------------------------------------------------
# the INT8 graph


# the operators MXNet 1.9.1's oneDNN build has INT8 forms of
_QUANTIZABLE = frozenset({'Convolution', '_sg_mkldnn_conv', 'FullyConnected',
                          '_sg_mkldnn_fully_connected', 'Pooling', 'Activation', 'elemwise_add',
                          'elemwise_mul', 'BatchNorm', 'Flatten', 'concat', 'Concat',
                          'Embedding'})


def _layers(partitioned):
    """``{node name: [its name and the layer names it holds]}`` of a graph partitioned for
    oneDNN: a fused ``_sg_mkldnn_conv`` node answers to the convolution, BatchNorm and
    activation it holds."""
    layers = {}
    for node in _nodes(partitioned):
        if node['op'] != 'null':
            layers[node['name']] = [node['name']] + [
                inner['name'] for sub in node.get('subgraphs', []) for inner in sub['nodes']
                if inner['op'] != 'null']
    return layers


def _match(names, patterns):
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def float_relus(partitioned):
    """The ReLUs that read a float32-only operator (AFF's selection in the ImageNet
    bottlenecks), left in float32: the map they write then serves both the INT8 layers after
    them (quantized once) and the next fusion's float32 arithmetic, which would otherwise
    dequantize it again (docs/int8.md: what it saves)."""
    nodes = _nodes(partitioned)
    return [node['name'] for node in nodes
            if node['op'] == 'Activation' and node.get('attrs', {}).get('act_type') == 'relu'
            and nodes[node['inputs'][0][0]]['op'] not in _QUANTIZABLE | {'null'}]


def float_products(partitioned):
    """Element-wise products (MultiAFF's weighting) left in float32: MXNet 1.9.1's INT8
    product takes int8 inputs only (a uint8 map makes the graph fail at run time), and with
    its quantizations it is slower than the float32 product (docs/int8.md)."""
    return [node['name'] for node in _nodes(partitioned) if node['op'] == 'elemwise_mul']


def _internal_dtypes(symbol):
    internals = symbol.get_internals()
    _, types, _ = internals.infer_type(data='float32')
    return internals, dict(zip(internals.list_outputs(), types))


def _bypass_unsigned_relus(symbol):
    """Drop the INT8 ReLUs (``_contrib_quantized_act``) whose input is uint8.

    MXNet 1.9.1 types the output of ``_contrib_quantized_act`` as int8 whatever its input, so
    after a uint8 input (a map whose calibrated minimum is >= 0) the next operator reads uint8
    bytes as int8: oneDNN refuses some of these pairs -- AFF/iAFF-ResNet-50's stage-4
    projection shortcut, an INT8 average pooling, fails with "could not create a primitive
    descriptor iterator" -- and the others silently read values above 127 as negative. A ReLU
    of uint8 values is the identity: its consumers read its input instead."""
    internals, dtypes = _internal_dtypes(symbol)
    graph = _Graph(symbol)
    dropped = 0
    for index, node in enumerate(graph.nodes):
        if node['op'] != '_contrib_quantized_act':
            continue
        source = internals[f"{node['name']}_output"].get_children().list_outputs()[0]
        if dtypes.get(source) == np.uint8:
            for output in range(3):  # the map, its minimum and maximum
                graph.redirect([index, output, 0], node['inputs'][output])
            dropped += 1
    return (graph.symbol() if dropped else symbol), dropped


_SUM_STEP = 2.0 ** -21   # relative; float32 resolves 2 ** -23 near 1
_SUM_SLOTS = 2048        # so at most 0.1 % on an input's scale


def _distinct_sums(symbol):
    """Scale the input ranges each INT8 sum (``_contrib_quantized_elemwise_add``) reads by
    factors ``1 + k * 2**-21`` drawn from its own calibrated output range.

    MXNet 1.9.1 caches the oneDNN sum primitive, whose scales depend on the input ranges and
    on the sum's calibrated output range, under a key made of the shapes, the input ranges
    and whatever its output-range buffers held before the call -- not of the calibrated
    range. Two sums of one shape with equal input ranges but different output ranges (one
    network calibrated twice in a process, say) then share a primitive, and the second
    writes its sums on the first one's scale: a network quantized after another calibration
    of itself loses accuracy (docs/int8.md). Sums with different output ranges now read
    different input ranges (the factors of the two inputs come from two hashes: 1 in 4
    million pairs collide), and a graph built twice is built the same. The change, at most
    0.1 % of an input's scale, is far below int8's step of 0.8 %, and it is part of the
    graph: exports keep it."""
    graph = _Graph(symbol)
    sums = [i for i, node in enumerate(graph.nodes)
            if node['op'] == '_contrib_quantized_elemwise_add']
    for index in sums:
        node = graph.nodes[index]
        attrs = node.get('attrs', {})
        output_range = f"{attrs.get('min_calib_range')}:{attrs.get('max_calib_range')}"
        for side, positions in (('A', (2, 3)), ('B', (4, 5))):  # min and max of each input
            slot = zlib.crc32(f'{side}{output_range}'.encode()) % _SUM_SLOTS
            factor = 1.0 + _SUM_STEP * (slot + 1)
            for position in positions:
                graph.nodes.append({'op': '_mul_scalar', 'attrs': {'scalar': repr(factor)},
                                    'name': f"{node['name']}_range{position}",
                                    'inputs': [node['inputs'][position]]})
                node['inputs'][position] = [len(graph.nodes) - 1, 0, 0]
    return (graph.symbol() if sums else symbol), len(sums)


_MXNET_CHATTER = ('excluded automatically', 'quantized activation only supports relu',
                  'Subgraph backend MKLDNN is activated')


@contextlib.contextmanager
def _quiet_quantization():
    """MXNet's quantization pass logs a line to the process's stderr for every operator it
    leaves in float32 (hundreds for an AFF network): those lines are dropped, any other is
    passed on."""
    from .._stderr import captured_stderr
    lines = []
    try:
        with captured_stderr(lines):
            yield
    finally:
        kept = [line for line in lines if not any(c in line for c in _MXNET_CHATTER)]
        if kept:
            print('\n'.join(kept), file=sys.stderr)


def _calibration_batch_size(images):
    # the executor keeps every map of a batch for the collectors: 64 CIFAR images, 8 ImageNet
    pixels = images.shape[2] * images.shape[3]
    return int(min(len(images), max(8, min(64, 64 * 32 * 32 // pixels))))


def _collect_ranges(symbol, arg_params, aux_params, images, collector):
    """Run the float32 ``symbol`` on ``images`` with ``collector`` watching every output."""
    batch = _calibration_batch_size(images)
    executors = {}
    for start in range(0, len(images), batch):
        chunk = mx.nd.array(images[start:start + batch])
        exe = executors.get(chunk.shape[0])
        if exe is None:
            exe = symbol.bind(mx.cpu(), dict(arg_params, data=chunk), aux_states=aux_params,
                              grad_req='null')
            exe.set_monitor_callback(collector.collect, monitor_all=True)
            executors[chunk.shape[0]] = exe
        exe.forward(is_train=False, data=chunk)
        mx.nd.waitall()


def _partitioned(symbol):
    """``symbol`` partitioned for oneDNN's quantization (convolutions with their BatchNorm,
    ReLU and sum folded)."""
    with _quiet_quantization():
        return symbol.get_backend_symbol('MKLDNN_QUANTIZE')


def quantize_symbol(symbol, arg_params, aux_params, images, calib_mode='naive', exclude=(),
                    granularity='tensor-wise'):
    """``(qsymbol, qarg_params, aux_params)``: the float32 ``symbol`` partitioned for oneDNN
    and quantized, except the nodes (of the partitioned graph) named in ``exclude``, with the
    activation ranges calibrated on ``images``. The low-level step of :func:`quantize`."""
    return _quantize_partitioned(_partitioned(symbol), arg_params, aux_params, images,
                                 calib_mode, exclude, granularity)


def _quantize_partitioned(partitioned, arg_params, aux_params, images, calib_mode, exclude,
                          granularity='tensor-wise'):
    from mxnet.contrib import quantization
    with _quiet_quantization():
        qsym, _, _, collector = quantization.quantize_graph(
            partitioned, arg_params, aux_params, ctx=mx.cpu(), excluded_sym_names=list(exclude),
            excluded_op_names=[], calib_mode=calib_mode, quantized_dtype='auto',
            quantize_mode='full', quantize_granularity=granularity)
        _collect_ranges(partitioned, arg_params, aux_params, images, collector)
        qsym, qargs, qauxs = quantization.calib_graph(qsym, arg_params, aux_params, collector,
                                                       calib_mode=calib_mode,
                                                       quantized_dtype='auto', logger=None)
        qsym = qsym.get_backend_symbol('MKLDNN_QUANTIZE')
    dropped = True
    while dropped:  # a dropped ReLU can make the maps after it uint8 too
        qsym, dropped = _bypass_unsigned_relus(qsym)
    qsym, _ = _distinct_sums(qsym)
    return qsym, qargs, qauxs


# ----------------------------------------------------------------------------------------------
# the INT8 network


class QuantizedNet(SymbolBlock):
    """An INT8 network made by :func:`quantize` (oneDNN, CPU): float32 images
    ``(N, C, H, W)`` in, float32 outputs out. A Gluon ``SymbolBlock``: hybridize it;
    ``export(prefix)`` writes a symbol and parameters that ``SymbolBlock.imports(..., ['data'],
    ...)`` loads in any MXNet 1.9.1 process (for ``graph='fused'``, one that imports openaff).

    Attributes: ``excluded`` (the layers left in float32), ``calibration`` (how the ranges
    were set), ``graph`` (``'standard'`` or ``'fused'``), ``channels`` (input channels)."""

    def __init__(self, symbol, params, channels=None, excluded=(), calibration='',
                 graph='standard'):
        with warnings.catch_warnings():  # the input's dtype is not declared: float32
            warnings.simplefilter('ignore', UserWarning)
            super().__init__(symbol, mx.sym.var('data'))
        for name, param in self.collect_params().items():
            value = params[name]
            param.dtype = value.dtype  # int8 weights and float32 ranges, as quantized
            param._load_init(value, mx.cpu())
        self.channels, self.graph = channels, graph
        self.excluded, self.calibration = list(excluded), calibration

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray) and self.channels and (
                x.ndim != 4 or x.shape[1] != self.channels):
            raise ValueError(f'this INT8 network takes (N, {self.channels}, H, W) float32 '
                             f'images; got shape {x.shape}')
        return super().forward(x, *args)

    def export(self, path, epoch=0, remove_amp_cast=True):
        """Write ``path-symbol.json`` and ``path-%04d.params`` (see the class docstring)."""
        if not self._cached_op_args:
            self._build_cache()  # Gluon exports the parameters its CachedOp lists: none yet
        return super().export(path, epoch, remove_amp_cast)

    def operators(self):
        """``{operator: count}`` of the INT8 graph, e.g. to see what stays float32."""
        counts = {}
        for node in _nodes(self(mx.sym.var('data'))):
            if node['op'] != 'null':
                counts[node['op']] = counts.get(node['op'], 0) + 1
        return counts


def quantize(net, calib_data, calib_mode='naive', num_calib_examples=None, exclude=None,
             ctx=None, graph='standard'):
    """An INT8 version of ``net`` for the CPU (MXNet's oneDNN backend), calibrated on
    ``calib_data``; AFF/iAFF (Dai et al., *Attentional Feature Fusion*, WACV 2021) and any
    other Gluon network.

    Parameters
    ----------
    net : HybridBlock
        An initialised network taking float32 ``(N, C, H, W)`` images: an openaff zoo network
        (released weights or not), a training checkpoint (:func:`quantize_checkpoint`), a
        GluonCV network, one of your own. It is not changed.
    calib_data : array or iterable of batches
        Images as the network sees them (normalised), typically a few hundred training
        images: one ``(N, C, H, W)`` array, a Gluon ``DataLoader`` of images or of
        ``(images, labels)``, a list of arrays, or an ``mx.io.DataIter``.
    calib_mode : {'naive', 'entropy'}
        Each activation's range is the minimum and maximum seen (``'naive'``) or the
        threshold that minimises the KL divergence of its quantized histogram
        (``'entropy'``).
    num_calib_examples : int, optional
        Use at most this many images of ``calib_data`` (default: all of them).
    exclude : list of str, optional
        Layers to keep in float32 besides those :func:`quantize` keeps (docs/int8.md): layer
        names or shell patterns such as ``'*stage3*'`` or ``'*dense*'``; a pattern that
        matches no layer is an error.
    ctx : Context, optional
        ``mx.cpu()`` (the default): MXNet 1.9.1 quantizes for oneDNN on the CPU only.
    graph : {'standard', 'fused'}
        ``'standard'``: standard MXNet operators only, the graph runs wherever MXNet 1.9.1
        does. ``'fused'``: each AFF/iAFF soft selection is openaff's fused float32 operator
        (faster, docs/int8.md measures by how much); the graph then runs only
        in processes that import openaff, and needs its operator library built (without it
        the selections stay standard operators).

    Returns
    -------
    QuantizedNet

    Raises
    ------
    ValueError
        in one line, before any layer is quantized: a bad calibration set (empty, not
        ``(N, C, H, W)``, another channel count than the network's, images too small, NaN or
        inf), an unknown ``calib_mode`` or ``graph``, a non-CPU ``ctx``, an ``exclude``
        pattern matching no layer, a network without weights.
    """
    if ctx is not None and getattr(ctx, 'device_type', None) != 'cpu':
        raise ValueError(f'INT8 inference runs on the CPU (MXNet 1.9.1 quantizes for oneDNN '
                         f'only); got ctx={ctx}')
    _check_modes(calib_mode, graph)
    if exclude is not None and (isinstance(exclude, str) or
                                not all(isinstance(p, str) for p in exclude)):
        raise ValueError(f'exclude must be a list of layer names or patterns, got {exclude!r}')
    _check_network(net)
    images = check_calibration(calib_data, net, num_calib_examples)
    symbol, arg_params, aux_params = float_graph(net, images, graph)
    partitioned = _partitioned(symbol)
    layers = _layers(partitioned)
    for pattern in exclude or ():
        if not any(_match(names, [pattern]) for names in layers.values()):
            raise ValueError(f'exclude: no layer of {type(net).__name__} matches {pattern!r}')
    excluded = float_relus(partitioned) + float_products(partitioned) + [
        node for node, names in layers.items() if exclude and _match(names, exclude)]
    excluded = list(dict.fromkeys(excluded))
    qsym, qargs, qauxs = _quantize_partitioned(partitioned, arg_params, aux_params, images,
                                               calib_mode, excluded)
    named = [layers[node][1] if len(layers[node]) > 1 else node for node in excluded]
    return QuantizedNet(qsym, dict(qargs, **qauxs), images.shape[1], named,
                        f'{calib_mode} over {len(images)} images', graph)


def quantize_checkpoint(name_or_path, calib_data, calib_mode='naive', num_calib_examples=None,
                        exclude=None, graph='standard'):
    """``(QuantizedNet, float32 network)`` of a zoo name (released weights), a released file or
    a training run's checkpoint, as :func:`openaff.apps.evaluate.resolve` finds them."""
    from .evaluate import build, resolve
    net = build(resolve(name_or_path), [mx.cpu()])
    return quantize(net, calib_data, calib_mode, num_calib_examples, exclude, graph=graph), net


def evaluate_int8(name_or_path, data=None, calib_batches=10, calib_mode='naive',
                  graph='standard', precise_bn_batches=0):
    """What ``openaff-evaluate --int8`` reports: top-1/top-5 accuracy and loss of the INT8
    version of a checkpoint (see :func:`openaff.apps.evaluate.evaluate_checkpoint`), calibrated
    on its first ``calib_batches`` training batches (read without augmentation), beside the
    same network in float32 (``float32_*`` keys). With ``precise_bn_batches`` the float32
    network's BatchNorm statistics are re-estimated first, and both are evaluated with them."""
    from ..batchnorm import precise_bn
    from ..engine import evaluate
    from .evaluate import EvalData, build, resolve, val_loader
    data = data or EvalData()
    if not (isinstance(calib_batches, numbers.Integral) and calib_batches >= 1):
        raise ValueError(f'--calib-batches must be a positive number of batches, got '
                         f'{calib_batches!r}')
    if data.dtype != 'float32':
        raise ValueError('--int8 quantizes the float32 network: leave --dtype at float32')
    _check_modes(calib_mode, graph)
    target = resolve(name_or_path)
    train, val = val_loader(data, target, with_train=True)
    batches = [batch[0] if isinstance(batch, list | tuple) else batch
               for batch, _ in zip(train, range(calib_batches))]
    net = build(target, [mx.cpu()])
    statistics = 'running statistics stored in the checkpoint'
    if precise_bn_batches:
        precise_bn(net, train, num_batches=precise_bn_batches, ctx=[mx.cpu()])
        statistics = f'precise BN over {precise_bn_batches} training batches'
    int8 = quantize(net, batches, calib_mode, graph=graph)
    net.hybridize(static_alloc=True)
    int8.hybridize(static_alloc=True, static_shape=True)
    reference = evaluate(net, val, [mx.cpu()])
    result = evaluate(int8, val, [mx.cpu()])
    return dict(result, target=name_or_path, dataset=data.dataset or target.dataset,
                labels=data.labels or target.labels, dtype='int8', bn_statistics=statistics,
                **{f'float32_{key[4:]}': value for key, value in reference.items()
                   if key.startswith('val_')},
                calibration=f'{int8.calibration} ({len(batches)} training batches)',
                excluded=int8.excluded, graph=graph,
                reference=target.reference, reference_acc=target.reference_acc)


def report_int8(result):
    """The lines ``openaff-evaluate --int8`` prints for a result of :func:`evaluate_int8`."""
    def scores(prefix):
        top5 = result[f'{prefix}top5']
        return (f'top1={result[f"{prefix}acc"]:.4f} '
                f'top5={"n/a" if top5 is None else format(top5, ".4f")} '
                f'loss={result[f"{prefix}loss"]:.4f}')
    change = 100 * (result['val_acc'] - result['float32_acc'])
    return '\n'.join([
        f'checkpoint:    {result["target"]}',
        f'data:          {result["dataset"]} ({result["labels"]} labels), validation split',
        f'BatchNorm:     {result["bn_statistics"]}',
        f'calibration:   {result["calibration"]}; graph {result["graph"]}',
        f'float32:       {scores("float32_")}',
        f'int8:          {scores("val_")}   ({change:+.2f} points top-1)',
        f'compare with:  {result["reference"] or "nothing recorded"}'])


# ----------------------------------------------------------------------------------------------
# onnxruntime, for comparison


class OnnxRuntimeNet:
    """``net`` exported to ONNX (:func:`openaff.apps.export.export_onnx`, checked against
    MXNet) and run by onnxruntime's CPU provider, called like a Gluon network (NDArray in,
    NDArray out). ``int8=True`` quantizes the file with onnxruntime's static quantization
    (``quantize_static``, QDQ format, uint8 activations and int8 weights: the pair its AVX2
    and AVX-512 kernels multiply fastest), calibrated by min/max on ``calib`` images.
    ``threads``: onnxruntime's intra-op threads (default: as many as MXNet uses)."""

    def __init__(self, net, input_shape, int8=False, calib=None, threads=None, folder=None):
        import onnxruntime

        from .export import export_onnx
        if int8:
            calib = check_calibration(calib, net)
        self._folder = tempfile.TemporaryDirectory() if folder is None else None
        folder = folder or self._folder.name
        path = os.path.join(folder, 'float32.onnx')
        export_onnx(net, path, input_shape=(1,) + tuple(input_shape[1:]))
        if int8:
            path = self._quantize(path, os.path.join(folder, 'int8.onnx'), calib)
        options = onnxruntime.SessionOptions()
        if threads is None:
            from .._threads import mxnet_threads
            threads = mxnet_threads()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # its idle threads would otherwise spin, taking the cores from MXNet's in one process
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=['CPUExecutionProvider'])
        self.path, self.int8 = path, int8

    @staticmethod
    def _quantize(source, target, calib):
        import logging

        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{'data': calib[i:i + 1]} for i in range(len(calib))])

            def get_next(self):
                return next(self.batches, None)

        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # its advice to run its shape pre-processing first
        try:
            quantize_static(source, target, Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            logger.setLevel(level)
        return target

    def __call__(self, x):
        return mx.nd.array(self.session.run(None, {'data': x.asnumpy()})[0])
