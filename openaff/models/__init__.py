"""The networks of *Attentional Feature Fusion* (Dai et al., WACV 2021)."""
from .cifar import CIFARAFFResNet, CIFARAFFResNeXt
from .imagenet import AFFResNet, AFFResNeXt

__all__ = ['CIFARAFFResNet', 'CIFARAFFResNeXt', 'AFFResNet', 'AFFResNeXt']
