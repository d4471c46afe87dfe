"""The shared training engine of the ``train_cifar.py`` and ``train_imagenet.py`` scripts."""
from .checkpoint import CheckpointManager, atomic_save
from .history import History, parse_log
from .loop import Engine, Outputs, TrainingDiverged, evaluate, seed_everything, setup_logging
from .recipe import Recipe
from .schedule import decay_epochs, make_lr_scheduler

__all__ = ['CheckpointManager', 'atomic_save', 'History', 'parse_log', 'Engine', 'Outputs',
           'Recipe', 'TrainingDiverged', 'evaluate', 'seed_everything', 'setup_logging',
           'decay_epochs', 'make_lr_scheduler']
