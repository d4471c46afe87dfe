"""Datasets and augmentation: CIFAR in its official local formats, scikit-learn's digits as the
embedded dataset, ImageNet from .rec files, image folders or synthetic data, and AutoAugment."""
