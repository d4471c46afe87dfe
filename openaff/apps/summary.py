"""Per-layer parameter and FLOP counts for Gluon networks.

FLOPs follow the convention of the original open-aff ``utils/flops.py`` so
that the numbers compare with those quoted in the paper:

* ``Conv2D``: ``in_c * kh * kw * out_c * out_h * out_w / groups``, plus
  ``out_c * out_h * out_w`` when the layer has a bias.  The convolution term
  is a count of multiply-accumulates, not of separate multiplies and adds.
* ``Dense``: ``2 * in * out - in``, plus ``out`` when the layer has a bias.
* Every other layer (BatchNorm, activations, pooling, element-wise ops in
  ``hybrid_forward``) counts 0.

Counts are per sample: the batch dimension of ``input_shape`` is ignored.

From the command line: ``openaff-summary NAME`` (see :mod:`openaff.cli.summary`).
"""
from dataclasses import asdict, dataclass, field
from typing import List, Tuple

import mxnet as mx
from mxnet import autograd
from mxnet.gluon import nn

from .._gluon import all_blocks, forward_hooks, imperative, is_trainable

__all__ = ["LayerRow", "ModelSummary", "summarize", "layer_flops"]


@dataclass
class LayerRow:
    """One forward call of a hooked block.

    Attributes:
        name: structural path of the block, as in the keys of
            ``net._collect_params_with_prefix()`` (e.g. ``layer1.0.conv1``).
        type: class name of the block.
        output_shape: shape of the output (a list of shapes for several).
        params: number of parameters registered directly on the block.
        trainable: those of ``params`` the optimizer updates (a gradient, lr_mult != 0).
        flops: FLOPs of this call (see module docstring).
    """

    name: str
    type: str
    output_shape: tuple
    params: int
    trainable: int
    flops: int


@dataclass
class ModelSummary:
    """Result of :func:`summarize`.

    ``rows`` lists every hooked block call in the order the calls finish
    (a Conv2D's own ``activation`` child therefore precedes it).  The totals
    are taken over the unique parameters of the whole network, so a shared
    parameter is counted once. ``trainable_params`` counts parameters with a
    gradient; ``weight_params`` counts every parameter except BatchNorm running
    statistics, the convention of the paper/README table and of
    ``compat/released_manifest.json`` (they differ only for frozen parameters,
    e.g. the CIFAR nets' input BatchNorm).  ``flops`` is the sum over ``rows``.
    """

    rows: List[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    weight_params: int = 0
    flops: int = 0
    input_shape: Tuple[int, ...] = ()

    def table(self):
        """Return the per-layer table as text with fixed-width columns."""
        header = ("Layer", "Type", "Output Shape", "Params", "FLOPs")
        cells = [(r.name, r.type, _shape_str(r.output_shape),
                  f"{r.params:,}", f"{r.flops:,}")
                 for r in self.rows]
        widths = [max(len(c[i]) for c in [header] + cells)
                  for i in range(len(header))]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [rule, _format_line(header, widths), rule.replace("-", "=")]
        lines += [_format_line(c, widths) for c in cells]
        lines.append(rule)
        return "\n".join(lines)

    def totals(self):
        """Return a short text with the parameter (M) and FLOP (G) totals."""
        return "\n".join([
            f"Input shape: {_shape_str(self.input_shape)}",
            f"Total params: {self.total_params:,} ({self.total_params / 1e6:.2f}M)",
            f"Trainable params: {self.trainable_params:,} ({self.trainable_params / 1e6:.2f}M)",
            f"Non-trainable params: {self.non_trainable_params:,} "
            f"({self.non_trainable_params / 1e6:.2f}M)",
            f"Params without BN running stats (paper/README): {self.weight_params:,} "
            f"({self.weight_params / 1e6:.2f}M)",
            f"FLOPs: {self.flops:,} ({self.flops / 1e9:.2f}G)",
        ])

    def to_dict(self):
        """Return a JSON-serialisable dict of the summary."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        for row in data["rows"]:
            row["output_shape"] = _jsonable_shape(row["output_shape"])
        return data

    def __str__(self):
        return self.table() + "\n" + self.totals()


def _format_line(cells, widths):
    left = "  ".join(c.ljust(w) for c, w in zip(cells[:3], widths[:3]))
    right = "  ".join(c.rjust(w) for c, w in zip(cells[3:], widths[3:]))
    return left + "  " + right


def _shape_str(shape):
    if isinstance(shape, list):
        return ", ".join(_shape_str(s) for s in shape)
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _jsonable_shape(shape):
    if isinstance(shape, list):
        return [_jsonable_shape(s) for s in shape]
    return list(shape)


def _output_shape(out):
    if isinstance(out, (list, tuple)):
        return [_output_shape(o) for o in out]
    return tuple(out.shape)


def layer_flops(block, output):
    """FLOPs of one call of ``block`` that produced ``output`` (per sample).

    Conv2D counts multiply-accumulates plus bias adds, Dense
    ``2*in*out - in`` plus bias adds, every other block 0, as in the
    original open-aff ``utils/flops.py``.
    """
    if isinstance(block, nn.Conv2D):
        return _conv2d_flops(block, output)
    if isinstance(block, nn.Dense):
        return _dense_flops(block)
    return 0


def _conv2d_flops(block, output):
    out_c, in_c_per_group, kh, kw = block.weight.shape
    # Dividing by batch * out_c leaves out_h * out_w whatever the layout.
    out_hw = output.size // (output.shape[0] * out_c)
    # in_c * ... / groups == (in_c / groups) * ..., kept integral.
    flops = in_c_per_group * kh * kw * out_c * out_hw
    if block.bias is not None:
        flops += out_c * out_hw
    return flops


def _dense_flops(block):
    units, in_units = block.weight.shape
    flops = 2 * in_units * units - in_units
    if block.bias is not None:
        flops += units
    return flops


def _block_names(net):
    """Map ``id(block) -> structural path`` by walking ``_children``."""
    names = {}

    def walk(block, path):
        names.setdefault(id(block), path)
        for key, child in block._children.items():
            walk(child, path + "." + key if path else key)

    walk(net, "")
    return names


def _should_hook(block):
    # Conv2D/Dense with `activation=` own an Activation child, so "leaf"
    # alone would miss them: also hook any block owning parameters itself.
    if isinstance(block, (nn.Sequential, nn.HybridSequential)):
        return False
    return not block._children or bool(block._reg_params)


def _param_counts(params):
    total = trainable = 0
    for p in params:
        size = p.data().size
        total += size
        if is_trainable(p):
            trainable += size
    return total, trainable


def _is_running_stat(param):
    return param.name.endswith(("running_mean", "running_var"))


def _unique_params(net):
    unique = {}
    for p in net.collect_params().values():
        unique.setdefault(id(p), p)
    return list(unique.values())


def _default_ctx(net):
    try:
        return net.collect_params().list_ctx()[0]
    except (RuntimeError, IndexError):
        return mx.cpu()


def _is_ndarray_output(out):
    if isinstance(out, (list, tuple)):
        return all(_is_ndarray_output(o) for o in out)
    return isinstance(out, mx.nd.NDArray)


def _make_hook(rows, names):
    def hook(block, _inputs, output):
        # Deferred initialisation traces blocks with Symbols first: skip.
        if not _is_ndarray_output(output):
            return
        total, trainable = _param_counts(block._reg_params.values())
        rows.append(LayerRow(
            name=names.get(id(block), ""),
            type=type(block).__name__,
            output_shape=_output_shape(output),
            params=total,
            trainable=trainable,
            flops=int(layer_flops(block, output)),
        ))
    return hook


def summarize(net, input_shape=(1, 3, 224, 224), ctx=None, dtype='float32'):
    """Count parameters and FLOPs of ``net`` layer by layer.

    Runs one inference-mode forward pass on zeros of ``input_shape``, with
    forward hooks on every non-container block that is a leaf or owns
    parameters.  ``net`` must be initialised (deferred initialisation is
    fine); it may be hybridized, in which case it runs imperatively for the
    pass and its hybridization is restored afterwards.  See the module
    docstring for the FLOP convention (conv FLOPs are multiply-accumulates,
    as in the original open-aff code).

    Args:
        net: a Gluon (Hybrid)Block.
        input_shape: shape of the single input, batch dimension included.
        ctx: context for the input; defaults to the parameters' context.
        dtype: dtype of the input: the network's (``'float16'`` after ``net.cast``).

    Returns:
        A :class:`ModelSummary`.
    """
    input_shape = tuple(int(d) for d in input_shape)
    ctx = ctx or _default_ctx(net)
    names = _block_names(net)
    rows = []
    hooked = [b for b in all_blocks(net) if _should_hook(b)]
    with imperative(net), forward_hooks(hooked, _make_hook(rows, names)), \
            autograd.pause(train_mode=False):
        net(mx.nd.zeros(input_shape, ctx=ctx, dtype=dtype))
    params = _unique_params(net)
    total, trainable = _param_counts(params)
    running, _ = _param_counts([p for p in params if _is_running_stat(p)])
    return ModelSummary(rows=rows, total_params=total,
                        trainable_params=trainable,
                        non_trainable_params=total - trainable,
                        weight_params=total - running,
                        flops=sum(r.flops for r in rows),
                        input_shape=input_shape)

