"""Dispatch of the fusion stages to the fused C++ operators (:mod:`openaff.ops`), on CPU
float32 only, with plain-layout inputs. Which graphs may hold them is decided in one place,
:func:`~.core.native_path` (from the target a graph is traced for, :mod:`~.graphs`).

``openaff_soft_select`` computes ``scale * (y + sigmoid(local + global) * (x - y))`` (AFF's
selection, Dai et al., WACV 2021, Sec. 3.3) in one pass, with its gradient.
``openaff_mscam_select`` computes a whole MS-CAM selection, branches included, for graphs
that only run inference (:func:`~.core.graph_mode`).
"""
from __future__ import annotations

from mxnet.gluon import nn

from .. import ops


def amp_active():
    from mxnet.contrib.amp import amp
    return bool(getattr(amp, '_amp_initialized', False))


def available():
    """Whether the fused operators are loaded (built, and not turned off). Where a graph may
    use them is decided by :func:`~.core.native_path`."""
    return ops.available()


# The native operator needs plain-layout inputs. Converting oneDNN-layout arrays with MXNet
# operators (cached oneDNN reorders into planned memory) is several times faster than the
# conversion MXNet's extension-operator dispatcher makes itself.
def plain_copy(F, value):
    """A plain-layout copy: one reorder, leaving ``value`` as it is for its other readers.
    For conv/BN outputs, which oneDNN keeps in a blocked layout."""
    return F.transpose(value, axes=(0, 1, 2, 3))


def plain_view(F, value):
    """``value`` in plain layout, converted in place (free when it is plain already). For the
    residual, usually the plain output of the previous fusion."""
    return F.reshape(value, shape=(0, 0, 0, 0))


def local_global_pair(stage, pooled):
    """``(local, global)`` branch names when ``stage`` is a soft selection by
    ``sigmoid(local + global)`` -- what the native operator computes -- else None."""
    if stage.rule != 'select' or stage.merge != 'add' or stage.post or len(stage.branches) != 2:
        return None
    local = [name for name in stage.branches if not pooled[name]]
    glob = [name for name in stage.branches if pooled[name]]
    return (local[0], glob[0]) if len(local) == len(glob) == 1 else None


# The widest fusion the inference operator computes. Its hand-written 1x1 products run at a
# fraction of oneDNN's rate, which the saved passes over the maps outweigh up to here. One
# hybridized AFF block, inference, 2 cores, blocked-layout inputs, folded speed-up: 1.8-2.2x
# at 16-128 channels, 1.3-1.6x at 256, 1.0x at 512, 0.9x at 1024, 0.5-0.7x at 2048; inside
# AFF-ResNet-50 (batch 8) folding up to 512 channels was 1-4 % slower.
FOLD_MAX_CHANNELS = 256


def mlp_branch(spec):
    """Whether a :func:`~.core.context_branch` spec is MS-CAM's ``conv BN ReLU conv BN``
    (dense 1x1 convolutions, nothing before or after) of at most ``FOLD_MAX_CHANNELS``
    channels: what ``openaff_mscam_select`` folds."""
    widths = spec.get('widths', ())
    return (len(widths) == 2 and max(widths) <= FOLD_MAX_CHANNELS
            and spec.get('groups', 1) == 1 and not spec.get('out_act') and not spec.get('head'))


def branch_inputs(branch):
    """``(symbols, eps)``: the operator's twelve inputs for one MS-CAM branch (per conv/BN
    pair the conv's weight and bias, the BatchNorm's gamma, beta, running mean and running
    variance) and the BatchNorms' epsilons; ``(None, None)`` when they cannot be folded: a
    BatchNorm fixes gamma, a convolution has no bias, or the shapes are not known yet."""
    layers = list(branch._children.values())
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2D)]
    norms = [layer for layer in layers if isinstance(layer, nn.BatchNorm)]
    if any(norm._kwargs.get('fix_gamma') for norm in norms):
        return None, None
    params = [p for conv, norm in zip(convs, norms) for p in (
        conv.weight, conv.bias, norm.gamma, norm.beta, norm.running_mean, norm.running_var)]
    if any(p is None for p in params):  # a convolution without bias
        return None, None
    if any(0 in p.shape for p in params):  # deferred: the first forward infers the shapes
        return None, None
    return [p.var() for p in params], {norm._kwargs['eps'] for norm in norms}
