"""Datasets by name: one :class:`DatasetSpec` per dataset (its head width, normalisation, input
size and how to read its splits), what training, evaluation and Grad-CAM look up instead of
each testing the name. A dataset joins by calling :func:`register_dataset` in its own module."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ['DatasetSpec', 'SplitOptions', 'register_dataset', 'dataset_spec', 'dataset_names',
           'HeadClasses']


@dataclass(frozen=True)
class SplitOptions:
    """What a training or evaluation run asks of a dataset's splits."""
    data_dir: str | None = None
    labels: str = 'fine'
    augment: bool = False       # the training split's random augmentation
    auto_aug: bool = False
    input_size: int | None = None
    with_train: bool = True     # False: the training split is not read (``None``)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as the tools need it.

    ``splits(options)`` returns ``(train, val)`` gluon datasets whose images are already
    transformed (normalised with ``mean``/``std``, augmented when ``options.augment``);
    ``train`` is ``None`` when ``options.with_train`` is False. ``classes`` is the width of
    the classifier head, which need not be the number of labels of every label set
    (``labels``): CIFAR-100 keeps 100 outputs on its 20 superclasses."""
    name: str
    classes: int
    mean: tuple
    std: tuple
    input_size: int
    splits: Callable[[SplitOptions], tuple]
    labels: tuple = ('fine',)


DATASETS: dict = {}

# the datasets shipped with openaff, imported on the first lookup: importing ``openaff.data``
# alone stays cheap
_BUILTIN_MODULES = ('openaff.data.cifar', 'openaff.data.digits', 'openaff.data.imagenet')


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make ``spec`` findable by its name; a second, different spec for a name is refused."""
    current = DATASETS.get(spec.name)
    if current is not None and current != spec:
        raise ValueError(f'a dataset named {spec.name!r} is already registered')
    DATASETS[spec.name] = spec
    return spec


def _load_builtin():
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def dataset_names() -> list[str]:
    _load_builtin()
    return list(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name is a ``ValueError`` listing the
    registered ones."""
    if name not in DATASETS:
        _load_builtin()
    if name not in DATASETS:
        raise ValueError(f'unknown dataset {name!r}; registered: {", ".join(DATASETS)}')
    return DATASETS[name]


class HeadClasses(Mapping):
    """``{dataset name: classifier width}``, read from the registry at each look-up."""

    def __getitem__(self, name):
        try:
            return dataset_spec(name).classes
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self):
        return iter(dataset_names())

    def __len__(self):
        return len(dataset_names())
