"""Lookup of the fusion blocks by name: class names, the original scripts' ``askc_type``
strings and paper names. Classes register themselves (:func:`register`)."""
from __future__ import annotations

import inspect
import numbers

from mxnet.gluon import HybridBlock

FUSIONS = {}   # class name -> class
ALIASES = {}   # askc_type string or paper name -> class name


def register(*aliases):
    """Class decorator: make a fusion block available to :func:`get_fusion` under its class
    name and ``aliases``. A name taken twice is an error."""
    def add(cls):
        names = (cls.__name__, *aliases)
        taken = [name for name in names if name in FUSIONS or name in ALIASES]
        if taken:
            raise ValueError(f'fusion names already registered: {taken}')
        FUSIONS[cls.__name__] = cls
        ALIASES.update({alias: cls.__name__ for alias in aliases})
        return cls
    return add


def list_fusions(include_aliases: bool = False) -> list[str]:
    """Names accepted by :func:`get_fusion` (class names, plus ``askc_type`` strings and paper
    names when ``include_aliases``)."""
    return sorted(FUSIONS) + (sorted(ALIASES) if include_aliases else [])


def resolve_fusion_name(name):
    """Return the class name for a class name, ``askc_type`` string or paper name.

    Matching is exact first, then case-insensitive; unknown names raise ``ValueError`` listing
    the valid ones."""
    if name in FUSIONS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    folded = {key.lower(): value for key, value in {**{n: n for n in FUSIONS}, **ALIASES}.items()}
    if isinstance(name, str) and name.lower() in folded:
        return folded[name.lower()]
    raise ValueError(f'unknown fusion {name!r}; valid names: {", ".join(list_fusions(True))}')


def get_fusion(name: str, channels: int = 64, r: int | None = None, **kwargs) -> HybridBlock:
    """Build a fusion block by name, e.g. ``get_fusion('AFF', 256, r=16)``.

    ``name`` is an original class name (``'ASKCFuse'``), an original ``askc_type`` string
    (``'ResGlobLocaforGlobLocaCha'``, ``'DirectAdd'``, ``'AXYforXY'``...) or a paper name
    (``'MSCAM'``, ``'AFF'``, ``'iAFF'``). ``r`` is passed only to blocks that have a reduction
    ratio (others use their fixed layout); ``channels`` is ignored by ``DirectAddFuse``.
    """
    cls = FUSIONS[resolve_fusion_name(name)]
    if not (isinstance(channels, numbers.Integral) and channels >= 1):
        raise ValueError(f'channels must be a positive int, got {channels!r}')
    accepted = inspect.signature(cls.__init__).parameters
    if 'channels' in accepted:
        kwargs['channels'] = channels
    if r is not None and 'r' in accepted:
        kwargs['r'] = r
    return cls(**kwargs)
