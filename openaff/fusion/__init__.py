"""Fusion blocks of *Attentional Feature Fusion* (Dai et al., WACV 2021, arXiv:2009.14082).

``get_fusion(name, channels, r)`` builds any of them by class name (``'ASKCFuse'``), original
``askc_type`` string (``'ResGlobLocaforGlobLocaCha'``) or paper name (``'MSCAM'``, ``'AFF'``,
``'iAFF'``). The package: :mod:`~.core` (context branches, stages, combine rules, the algebra,
global-pooling and graph-mode switches), :mod:`~.native` (dispatch to the fused C++
operators), :mod:`~.graphs` (where a traced graph will run), :mod:`~.catalog` (every original
class as a registered configuration), :mod:`~.multi` (AFF of N inputs), :mod:`~.registry`
(lookup).

Where graphs hold the fused operators. They exist only on CPU, for float32, and only
``openaff`` processes have them. A symbolic graph holds them only when it is traced for a
declared CPU float32 target without AMP (:func:`~.core.native_path` decides, in one place);
any other graph is made of standard MXNet operators. The zoo's networks and a fusion block
hybridized on its own declare their targets themselves (:class:`~.graphs.DeviceGraphs`): they
trace for the device and dtype of their inputs, trace again when these change (``reset_ctx``,
``cast``), and keep a portable graph of standard operators for ``export()`` and AMP's
``convert_hybrid_block``. Inside a hybridized network of your own (whose CachedOp openaff does
not manage) the fusion blocks are standard operators, unless you trace it inside
:func:`~.graphs.graph_target` (``mx.cpu()``, float32): such a graph is fast on the CPU but
valid only there, so hybridize again before moving, casting, exporting or converting it.
Subclassing :class:`~.graphs.DeviceGraphs` (before ``HybridBlock``) gives your network the
zoo's handling. Imperative calls use the fused operators on CPU float32 arrays.
"""
from .catalog import *  # noqa: F401,F403  (registers the catalog)
from .catalog import AFF, MSCAM, iAFF
from .core import (
                   COMBINE_RULES,
                   IMPLEMENTATIONS,
                   POOLINGS,
                   SOURCES,
                   AttentionalFusion,
                   GlobalAvgPool,
                   Stage,
                   concat_channels,
                   context_branch,
                   current_implementation,
                   exportable,
                   global_pooling,
                   graph_mode,
                   implementation,
                   native_path,
)
from .graphs import DeviceGraphs, Target, declared_target, graph_target
from .multi import MultiAFF
from .registry import ALIASES, FUSIONS, get_fusion, list_fusions, register, resolve_fusion_name

__all__ = ['AttentionalFusion', 'Stage', 'context_branch', 'concat_channels', 'get_fusion',
           'list_fusions', 'resolve_fusion_name', 'register', 'implementation',
           'current_implementation', 'exportable', 'global_pooling', 'graph_mode', 'GlobalAvgPool',
           'graph_target', 'declared_target', 'native_path', 'DeviceGraphs', 'Target',
           'IMPLEMENTATIONS', 'POOLINGS', 'COMBINE_RULES', 'SOURCES', 'FUSIONS', 'ALIASES', 'MSCAM',
           'AFF', 'iAFF', 'MultiAFF']
