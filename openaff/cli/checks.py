"""Checks made before any work of a training command: output folders writable, input files
there, the run folder free of another live run and of an earlier run replaced unasked, and a run
to resume readable and trained as asked. Each refusal is a ``ValueError`` naming the flag."""
from __future__ import annotations

import os
import tempfile

import mxnet as mx


def check_paths(dirs=(), files=()):
    """``ValueError`` before any work for an output folder that cannot be written or an input
    file that is missing; ``dirs`` and ``files`` are (flag, path) pairs, empty paths skipped."""
    for flag, path in dirs:
        if not path:
            continue
        folder = os.path.expanduser(path)
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise ValueError(f'{flag} {path}: cannot write there ({err.strerror or err})') from None
    for flag, path in files:
        if path and not os.path.isfile(os.path.expanduser(path)):
            raise ValueError(f'{flag} {path}: no such file')


# what the trainer states of a checkpoint carry (the optimizer with its schedule): a resumed run
# continues them, so a command that asks for other values would be misled
RESUMED_FIELDS = ('lr', 'lr_mode', 'num_epochs', 'warmup_epochs', 'warmup_lr', 'step_epochs',
                  'step_factor', 'momentum', 'wd', 'no_wd')


def check_run(save_dir, model_name, resume_from, overwrite, recipe, options, net=None,
              chief=True):
    """``ValueError`` before any work when another live run of the model writes to
    ``save_dir``, when ``save_dir`` holds an earlier run that this one would replace unasked,
    or when the run to resume cannot be read, holds another network than ``net`` or was
    trained with another schedule than ``recipe``; ``options`` (a RecipeOptions) names the
    flags. The ``chief`` of a run (rank 0, the writer) holds the folder's lock from here on."""
    from ..engine.checkpoint import CheckpointManager
    from ..engine.recipe import recipe_record
    checkpoints = CheckpointManager(save_dir, model_name, create=False)
    if chief:
        try:
            checkpoints.claim()
        except RuntimeError as err:
            raise ValueError(f'--save-dir {save_dir}: {err}; wait for it, or give another '
                             f'--save-dir') from None
    if not resume_from:
        if os.path.exists(checkpoints.pointer) and not overwrite:
            raise ValueError(f'--save-dir {save_dir} holds a run of {model_name}: continue it '
                             f'with --resume-from latest, or replace it with --overwrite')
        return
    try:
        record = checkpoints.find(resume_from)
    except FileNotFoundError as err:
        raise ValueError(f'--resume-from {resume_from}: {err}') from None
    except ValueError as err:  # a checkpoint record that is not JSON
        raise ValueError(f'--resume-from {resume_from}: the checkpoint record cannot be read '
                         f'({err})') from None
    _check_resumed_params(resume_from, record['params'], net)
    trained, asked = record.get('recipe'), recipe_record(recipe)
    changed = [name for name in RESUMED_FIELDS
               if trained and record.get('states') and trained.get(name) != asked.get(name)]
    if changed:
        said = ', '.join(f'{options.flag(n)} {trained[n]} (asked: {asked[n]})' for n in changed)
        raise ValueError(f'--resume-from {resume_from}: the run was trained with {said}; a '
                         f'resumed run continues its optimizer and schedule, so give the same '
                         f'values or start a new run')


def _check_resumed_params(flag_value, path, net):
    """``ValueError`` for a resume file MXNet cannot read, or whose parameter names are not
    ``net``'s (a checkpoint of another architecture)."""
    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError:
        raise ValueError(f'--resume-from {flag_value}: {path} is not a parameter file MXNet '
                         f'can read (damaged or not a checkpoint)') from None
    if net is None or not isinstance(saved, dict):
        return
    names = {key.split(':', 1)[-1] for key in saved}
    expected = set(net._collect_params_with_prefix())
    if names != expected:
        missing, unexpected = sorted(expected - names), sorted(names - expected)
        raise ValueError(f'--resume-from {flag_value}: a checkpoint of another network '
                         f'({len(missing)} parameters of this one missing, e.g. '
                         f'{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})')


def check_training_outputs(opt, model_name, recipe, options, net=None, chief=True, dirs=(),
                           files=()):
    """What every training command checks of its outputs: the folders ``dirs`` writable and
    the files ``files`` there (:func:`check_paths`), then the run of ``model_name`` in
    ``--save-dir`` (:func:`check_run`, with ``--resume-from`` and ``--overwrite``)."""
    check_paths(dirs=dirs, files=files)
    check_run(opt.save_dir or '.', model_name, opt.resume_from, opt.overwrite, recipe, options,
              net, chief)
