"""The networks of *Attentional Feature Fusion* (Dai et al., WACV 2021)."""
from .cifar import CIFARAFFResNet, CIFARAFFResNeXt
from .external import gluoncv_net
from .imagenet import AFFResNet, AFFResNeXt
from .inception import CIFARInception
from .registry import (
    BUILDERS,
    NETWORKS,
    build_network,
    builder_name,
    register_network,
    resolve_network,
)

__all__ = ['CIFARAFFResNet', 'CIFARAFFResNeXt', 'CIFARInception', 'AFFResNet', 'AFFResNeXt',
           'gluoncv_net',
           'BUILDERS', 'NETWORKS', 'build_network', 'builder_name', 'register_network',
           'resolve_network']
