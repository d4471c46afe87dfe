"""Fusion blocks of *Attentional Feature Fusion* (Dai et al., WACV 2021, arXiv:2009.14082).

``get_fusion(name, channels, r)`` builds any of them by class name (``'ASKCFuse'``), original
``askc_type`` string (``'ResGlobLocaforGlobLocaCha'``) or paper name (``'MSCAM'``, ``'AFF'``,
``'iAFF'``). The package: :mod:`~.core` (context branches, stages, combine rules, the algebra,
global-pooling and graph-mode switches), :mod:`~.native` (dispatch to the fused C++
operators), :mod:`~.catalog` (every original class as a registered configuration),
:mod:`~.multi` (AFF of N inputs), :mod:`~.registry` (lookup).
"""
from .core import (COMBINE_RULES, IMPLEMENTATIONS, POOLINGS, SOURCES, AttentionalFusion,
                   GlobalAvgPool, Stage, concat_channels, context_branch, current_implementation,
                   exportable, global_pooling, graph_mode, implementation)
from .registry import ALIASES, FUSIONS, get_fusion, list_fusions, register, resolve_fusion_name
from .catalog import *  # noqa: F401,F403  (registers the catalog)
from .catalog import AFF, MSCAM, iAFF
from .multi import MultiAFF

__all__ = ['AttentionalFusion', 'Stage', 'context_branch', 'concat_channels', 'get_fusion',
           'list_fusions', 'resolve_fusion_name', 'register', 'implementation',
           'current_implementation', 'exportable', 'global_pooling', 'graph_mode', 'GlobalAvgPool',
           'IMPLEMENTATIONS', 'POOLINGS', 'COMBINE_RULES', 'SOURCES', 'FUSIONS', 'ALIASES', 'MSCAM',
           'AFF', 'iAFF', 'MultiAFF']
