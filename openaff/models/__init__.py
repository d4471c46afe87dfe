"""The networks of *Attentional Feature Fusion* (Dai et al., WACV 2021)."""
from .cifar import CIFARAFFResNet, CIFARAFFResNeXt
from .external import gluoncv_net
from .imagenet import AFFResNet, AFFResNeXt
from .inception import CIFARInception
from .registry import BUILDERS, build_network, builder_name

__all__ = ['CIFARAFFResNet', 'CIFARAFFResNeXt', 'CIFARInception', 'AFFResNet', 'AFFResNeXt',
           'gluoncv_net',
           'BUILDERS', 'build_network', 'builder_name']
