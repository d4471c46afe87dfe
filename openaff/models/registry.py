"""Network builders by name: what training checkpoints record (``{'class': ..., 'kwargs':
...}``, or ``{'function': ...}`` for a builder function) and what evaluation, benchmarks,
Grad-CAM baselines and distillation teachers rebuild from. A builder joins by decorating it
with :func:`register_network` in its own module; nothing else lists it."""
from __future__ import annotations

import importlib

GLUONCV_PREFIX = 'gluoncv:'


def gluoncv_name(entry):
    """The GluonCV model-zoo name of an entry written ``gluoncv:NAME``, else None: the one
    place that reads the prefix."""
    return entry[len(GLUONCV_PREFIX):] if entry.startswith(GLUONCV_PREFIX) else None


def gluoncv_entry(name):
    """``NAME`` as an entry the resolver reads as GluonCV's (a ``gluoncv:NAME`` stays)."""
    return name if gluoncv_name(name) else GLUONCV_PREFIX + name


def display_name(entry):
    """An entry as a figure labels it: ``gluoncv:resnet50_v1d`` -> ``resnet50_v1d``."""
    return gluoncv_name(entry) or entry


__all__ = ['NETWORKS', 'BUILDERS', 'register_network', 'network_task', 'builder_name',
           'record_name', 'resolve_network', 'build_network', 'GLUONCV_PREFIX', 'gluoncv_name',
           'gluoncv_entry', 'display_name']

NETWORKS: dict = {}
BUILDERS = NETWORKS  # the name the first checkpoints' readers imported

# builders defined in modules that import ``openaff.models`` themselves, so the package cannot
# import them eagerly: loaded on the first lookup that misses
_DEFERRED_MODULES = ('openaff.segmentation',)


def register_network(builder=None, *, task='classification'):
    """Register a network class or function under its ``__name__`` (the name checkpoints
    record). ``task`` says what its outputs are (``'classification'``: one row of class
    scores per image; ``'segmentation'``: per-pixel scores), so a tool refuses networks it
    cannot score. Registering another object under a taken name is a ``ValueError``:
    old checkpoints would silently rebuild a different network."""
    def register(fn):
        name = fn.__name__
        current = NETWORKS.get(name)
        # the same definition seen again (a reloaded module) replaces itself
        if current is not None and current is not fn and \
                (current.__module__, current.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f'a network builder named {name!r} is already registered '
                             f'({current.__module__}.{current.__qualname__})')
        fn._openaff_task = task
        NETWORKS[name] = fn
        return fn
    return register if builder is None else register(builder)


def _load_deferred():
    for module in _DEFERRED_MODULES:
        importlib.import_module(module)


def _lookup(name):
    if name not in NETWORKS:
        _load_deferred()
    if name not in NETWORKS:
        raise ValueError(f'unknown network builder {name!r} (from a checkpoint record?); '
                         f'registered: {", ".join(NETWORKS)}')
    return NETWORKS[name]


def network_task(name):
    """What the registered builder ``name`` outputs (see :func:`register_network`)."""
    return getattr(_lookup(name), '_openaff_task', 'classification')


def builder_name(builder):
    """The name a checkpoint records for ``builder`` (a registered class or function)."""
    name = getattr(builder, '__name__', None)
    if NETWORKS.get(name) is not builder:
        raise ValueError(f'{builder!r} is not a registered network builder: {", ".join(NETWORKS)}')
    return name


def record_name(record):
    """The builder name of a checkpoint record's ``net`` entry: ``class`` for the network
    classes, ``function`` as segmentation runs wrote it."""
    for key in ('class', 'function'):
        if key in record:
            return record[key]
    raise ValueError(f'a network record names its builder under "class" or "function", got '
                     f'the keys {sorted(record)}')


def resolve_network(entry, classes=None, **kwargs):
    """(builder, its keyword arguments) of ``entry``: a checkpoint record's ``net`` entry
    (``{'class' or 'function': NAME, 'kwargs': {...}}``), ``'gluoncv:NAME'`` (a GluonCV
    model-zoo network with ``classes`` outputs) or a registered builder's name. ``kwargs``
    are added to (and override) the recorded arguments, e.g. ``pretrained=True`` for a
    GluonCV network."""
    if isinstance(entry, dict):
        return _lookup(record_name(entry)), {**entry.get('kwargs', {}), **kwargs}
    if not isinstance(entry, str):
        raise TypeError(f'a network is named by a checkpoint record (dict) or a string, got '
                        f'{type(entry).__name__}')
    gluoncv = gluoncv_name(entry)
    if gluoncv is not None:
        arguments = {'name': gluoncv, **({'classes': classes} if classes is not None else {})}
        return _lookup('gluoncv_net'), {**arguments, **kwargs}
    return _lookup(entry), ({'classes': classes} if classes is not None else {}) | kwargs


def build_network(name, kwargs=None, **overrides):
    """The network a registered builder name (or a checkpoint record, or ``gluoncv:NAME``)
    describes, uninitialised; an unknown name is a ``ValueError`` listing the registered
    ones."""
    if isinstance(name, str) and gluoncv_name(name) is None:
        builder = _lookup(name)
        return builder(**{**(kwargs or {}), **overrides})
    builder, arguments = resolve_network(name, **overrides)
    return builder(**{**arguments, **(kwargs or {})})
