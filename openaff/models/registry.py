"""Network builders by name: what training checkpoints record (``{'class': ..., 'kwargs':
...}``) and what evaluation and ``--use-pretrained`` rebuild from."""
from __future__ import annotations

from .cifar import CIFARAFFResNet, CIFARAFFResNeXt
from .external import gluoncv_net
from .imagenet import AFFResNet, AFFResNeXt
from .inception import CIFARInception

BUILDERS = {builder.__name__: builder for builder in (
    CIFARAFFResNet, CIFARAFFResNeXt, CIFARInception, AFFResNet, AFFResNeXt, gluoncv_net)}


def builder_name(builder):
    """The name a checkpoint records for ``builder`` (a registered class or function)."""
    name = getattr(builder, '__name__', None)
    if BUILDERS.get(name) is not builder:
        raise ValueError(f'{builder!r} is not a registered network builder: {", ".join(BUILDERS)}')
    return name


def build_network(name, kwargs):
    """The network ``BUILDERS[name](**kwargs)``; an unknown name is a ``ValueError`` listing
    the registered ones."""
    if name not in BUILDERS:
        raise ValueError(f'unknown network builder {name!r} (from a checkpoint record?); '
                         f'registered: {", ".join(BUILDERS)}')
    return BUILDERS[name](**kwargs)
