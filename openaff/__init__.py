"""openaff: Attentional Feature Fusion (Dai et al., WACV 2021) for MXNet/Gluon."""
__version__ = "0.1.0"
