"""Where a traced graph will run, and the blocks whose graphs openaff traces for it.

The fused C++ operators (:mod:`openaff.ops`) exist only on CPU, for float32. A symbolic graph
holds them only when it is traced for a declared :class:`Target` that has them (see
:func:`~.core.native_path`, the one place that decides); every other graph -- one traced for a
GPU, another dtype, under AMP, for export, or with nothing declared -- is made of standard
MXNet operators only, and runs, exports and converts anywhere.

:class:`DeviceGraphs` declares the target for the graphs of the blocks it manages (the zoo's
networks, the fusion blocks hybridized on their own). A network of your own declares it with
:func:`graph_target`, or not at all (then its fusions are standard operators).
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet.gluon.block import _flatten

from . import native

__all__ = ['Target', 'graph_target', 'declared_target', 'portable', 'DeviceGraphs']


@dataclass(frozen=True)
class Target:
    """Where a graph runs: the device type (``'cpu'``, ``'gpu'``), the dtype of its inputs, and
    whether AMP (:func:`mxnet.contrib.amp.init`) casts its operators."""
    device_type: str
    dtype: str
    amp: bool = False

    @classmethod
    def of(cls, arrays):
        """The target of a call on ``arrays`` (nested lists allowed): its first NDArray's
        device type and dtype; None when there is no NDArray."""
        first = next((a for a in _flatten(list(arrays), 'input')[0]
                      if isinstance(a, mx.nd.NDArray)), None)
        if first is None:
            return None
        return cls(first.context.device_type, _dtype_name(first.dtype), native.amp_active())

    @property
    def native(self):
        """Whether the fused operators run here: CPU, float32, no AMP casting."""
        return self.device_type == 'cpu' and self.dtype == 'float32' and not self.amp


def _dtype_name(dtype):
    try:
        return np.dtype(dtype).name
    except TypeError:  # 'bfloat16', which numpy does not know by name
        return str(dtype)


_TARGET = contextvars.ContextVar('openaff_graph_target', default=None)


@contextmanager
def _declared(target):
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)


@contextmanager
def graph_target(ctx, dtype='float32'):
    """Declare that the symbolic graphs traced in this context will run on ``ctx`` (a Context
    or a device type such as ``'cpu'``) with ``dtype`` inputs.

    Only a graph traced for a CPU float32 target can hold the fused operators, and only there
    is it valid: retrace it (``net.hybridize()`` again) before it runs on another device or
    dtype, is exported, or is converted by AMP. The blocks of :class:`DeviceGraphs` declare
    their targets themselves."""
    device_type = ctx if isinstance(ctx, str) else ctx.device_type
    with _declared(Target(device_type, _dtype_name(dtype), native.amp_active())):
        yield


def declared_target():
    """The :class:`Target` declared for the symbolic graph being traced now, or None: a
    portable graph, made of standard operators only."""
    return _TARGET.get()


def portable(F):
    """Whether the forward being built is a portable graph: symbolic, for no declared target.
    Such graphs are what exports and AMP's conversions read: forms that MXNet 1.9.1's
    low-precision pass types correctly are preferred there over the fastest ones."""
    return F is mx.symbol and _TARGET.get() is None


class DeviceGraphs:
    """Mixin for a ``HybridBlock`` (list it before ``HybridBlock``) whose hybridized graphs
    openaff traces for the device and dtype of the inputs.

    Two graphs per CachedOp: the one it runs, traced for the inputs' :class:`Target` (with the
    fused operators on CPU float32), and a portable one of standard operators only, which is
    what Gluon keeps as the block's graph (``_cached_graph``): what ``export()``,
    ``SymbolBlock``, :func:`mxnet.contrib.amp.convert_hybrid_block` and ``infer_type`` read.
    A call on another device type or dtype than the graphs were traced for (after
    ``collect_params().reset_ctx(...)``, for instance) traces them again."""

    _graph_target = None    # what the CachedOp's graph was traced for
    _tracing_for = None     # the target declared while a graph is traced
    _device_graph = ()      # (inputs, symbol) the CachedOp runs

    def forward(self, x, *args):
        if getattr(self, '_active', False) and self._graph_target is not None:
            target = Target.of((x,) + args)
            if target is not None and target != self._graph_target:
                self._clear_cached_op()
        return super().forward(x, *args)

    def _get_graph(self, *args):
        if self._cached_graph:
            return self._cached_graph
        with _declared(self._tracing_for):
            return super()._get_graph(*args)

    def _build_cache(self, *args):
        target = Target.of(args)
        portable = self._get_graph(*args)
        self._cached_graph, self._tracing_for = (), target
        try:
            super()._build_cache(*args)
            self._device_graph = self._cached_graph
        finally:
            # a backend's partitioned graph stays in the CachedOp, not in what is exported
            self._cached_graph, self._tracing_for = portable, None
        self._graph_target = target

    def _clear_cached_op(self):
        super()._clear_cached_op()
        self._device_graph, self._graph_target = (), None
