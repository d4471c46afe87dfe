"""The device options of the evaluation and benchmark commands, under the names they import
here: :func:`~openaff.cli.args.add_devices_arg` and :func:`~openaff.cli.runtime.contexts_of`.
What the training commands share lives in ``args`` (options), ``checks`` (before any work),
``runtime`` (cluster, devices, precision) and ``fitting`` (the engine's run)."""
from __future__ import annotations

from .args import add_devices_arg
from .runtime import contexts_of

__all__ = ['add_devices_arg', 'contexts_of']
