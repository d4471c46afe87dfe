"""Datasets and augmentation: CIFAR in its official local formats, scikit-learn's digits as the
embedded dataset, ImageNet from .rec files, image folders or synthetic data, and AutoAugment."""

# Classifier width per CIFAR-like dataset. CIFAR-100 keeps its 100 outputs on the 20 coarse
# labels too, as the released superclass networks do.
HEAD_CLASSES = {'cifar10': 10, 'cifar100': 100, 'digits': 10}
