"""Dispatch of the fusion stages to the fused C++ soft selection (:mod:`openaff.ops`).

The operator computes ``scale * (y + sigmoid(local + global) * (x - y))`` (AFF's selection,
Dai et al., WACV 2021, Sec. 3.3) in one pass, on CPU float32 only, with plain-layout inputs.
"""
from __future__ import annotations

import numpy as np

from .. import ops


def amp_active():
    from mxnet.contrib.amp import amp
    return bool(getattr(amp, '_amp_initialized', False))


def ready(block):
    """Whether ``block``'s graph will run where the native operator exists: every parameter
    float32 on a CPU context, no AMP casting, and the library loaded."""
    if amp_active():
        return False
    params = list(block.collect_params().values())
    try:
        on_cpu = all(ctx.device_type == 'cpu' for p in params for ctx in p.list_ctx())
    except RuntimeError:  # not initialised: no context to run on yet
        return False
    return bool(params) and on_cpu and all(np.dtype(p.dtype) == np.float32 for p in params) \
        and ops.available()


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
