"""Datasets and augmentation: CIFAR in its official local formats, scikit-learn's digits as the
embedded dataset, ImageNet from .rec files, image folders or synthetic data, and AutoAugment.
Each dataset registers a :class:`~openaff.data.registry.DatasetSpec` (see
:func:`~openaff.data.registry.dataset_spec`)."""
from .registry import DatasetSpec, SplitOptions, dataset_spec, register_dataset
from .registry import HeadClasses as _HeadClasses

# classifier width per dataset, for the code that imported this table before the registry
HEAD_CLASSES = _HeadClasses()

__all__ = ['DatasetSpec', 'SplitOptions', 'dataset_spec', 'register_dataset', 'HEAD_CLASSES']
