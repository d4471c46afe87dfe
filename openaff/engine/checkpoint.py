"""Checkpoints that survive a kill: every file is written to a temporary name in the same
directory and renamed into place, and a small JSON pointer, written last, names the newest
complete set (parameters, trainer states, epoch, metrics, history)."""
from __future__ import annotations

import glob
import json
import os
import re

__all__ = ['CheckpointManager', 'atomic_write', 'atomic_save', 'score_name']


def score_name(record):
    """The history key of a checkpoint record's held-out score (its task's: ``val_acc`` for
    classification, ``val_miou`` for segmentation); records written before they named it are
    classification's."""
    return record.get('score') or 'val_acc'


def atomic_save(path, write):
    """Call ``write(tmp_path)``, then rename over ``path``: readers see the old file or the new
    one, never a truncated one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    try:
        write(tmp)
        with open(tmp, 'rb') as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write(path, text):
    def write(tmp):
        with open(tmp, 'w') as handle:
            handle.write(text)
    return atomic_save(path, write)


_CLAIMED = {}  # lock path -> the lock this process holds


def release_claims():
    """Release every run lock this process holds (a run's end; exiting releases them too)."""
    while _CLAIMED:
        _CLAIMED.popitem()[1].release()


class CheckpointManager:
    """Writes ``<model>-epoch<NNNN>.params/.states`` each epoch and ``<model>-checkpoint.json``
    pointing at the newest; keeps the last ``keep`` sets plus every ``save_period``-th; best
    weights keep the original name ``%.4f-<model>-best.params``."""

    def __init__(self, save_dir, model_name, keep=2, save_period=0, create=True):
        self.save_dir = os.path.expanduser(save_dir)
        self.model_name = model_name
        self.keep = keep
        self.save_period = save_period
        if create:  # distributed workers other than rank 0 only read checkpoints
            os.makedirs(self.save_dir, exist_ok=True)
            self._remove_stale_temporaries()

    def _remove_stale_temporaries(self):
        """Half-written files of a killed run (never the checkpoint files themselves)."""
        model, folder = glob.escape(self.model_name), glob.escape(self.save_dir)
        # best weights start with their score: %.4f-<model>[-<epoch>]-best.params
        for pattern in (f'.{model}-*.tmp-*', f'.[0-9].[0-9][0-9][0-9][0-9]-{model}-*.tmp-*'):
            for path in glob.glob(os.path.join(folder, pattern)):
                os.remove(path)

    def claim(self):
        """Hold this run's lock on ``save_dir`` for the life of the process (or until
        :func:`release_claims`); ``RuntimeError`` when another live process of this machine
        holds it (two runs of one model into one folder would
        overwrite each other's checkpoints and interleave their logs). The operating system
        drops the lock when the process ends, however it ends."""
        import filelock
        path = self._lock_path()
        if path in _CLAIMED:  # this process holds it already (a second run in one process)
            return _CLAIMED[path]
        lock = filelock.FileLock(path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise RuntimeError(f'another run of {self.model_name} is writing to '
                               f'{self.save_dir}') from None
        _CLAIMED[path] = lock
        return lock

    def _lock_path(self):
        # kept in the temporary folder, not in save_dir: a run's folder holds only what it
        # wrote, and the lock guards the runs of one machine (the chief alone writes)
        import hashlib
        import tempfile
        key = f'{os.path.realpath(self.save_dir)}\0{self.model_name}'.encode()
        folder = os.path.join(tempfile.gettempdir(), 'openaff-run-locks')
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, hashlib.sha1(key).hexdigest()[:20] + '.lock')

    @property
    def pointer(self):
        return os.path.join(self.save_dir, f'{self.model_name}-checkpoint.json')

    def _epoch_path(self, epoch, ext):
        return os.path.join(self.save_dir, f'{self.model_name}-epoch{epoch:04d}.{ext}')

    def save(self, net, trainer, epoch, state):
        """Save the state after ``epoch`` (0-based, completed) and point the JSON at it;
        ``trainer`` None saves no optimizer state."""
        params = atomic_save(self._epoch_path(epoch, 'params'), net.save_parameters)
        states = trainer and atomic_save(self._epoch_path(epoch, 'states'), trainer.save_states)
        record = dict(state, epoch=epoch, params=os.path.basename(params),
                      states=states and os.path.basename(states), model=self.model_name)
        atomic_write(self.pointer, json.dumps(record, indent=1))
        self._prune(epoch)
        return record

    def save_best(self, net, score, epoch=None):
        """``%.4f-<model>-best.params`` (CIFAR), ``%.4f-<model>-<epoch>-best.params`` (ImageNet)."""
        stem = self.model_name if epoch is None else f'{self.model_name}-{epoch}'
        path = os.path.join(self.save_dir, '%.4f-%s-best.params' % (score, stem))
        return atomic_save(path, net.save_parameters)

    def save_final(self, net):
        return atomic_save(os.path.join(self.save_dir, f'{self.model_name}-final.params'),
                           net.save_parameters)

    def _prune(self, newest):
        for path in glob.glob(os.path.join(self.save_dir, f'{self.model_name}-epoch*.params')):
            epoch = int(path.rsplit('epoch', 1)[1].split('.')[0])
            periodic = self.save_period and (epoch + 1) % self.save_period == 0
            if epoch <= newest - self.keep and not periodic:
                for ext in ('params', 'states'):
                    stale = self._epoch_path(epoch, ext)
                    if os.path.exists(stale):
                        os.remove(stale)

    def latest(self):
        """The newest checkpoint record, or None when there is none."""
        if not os.path.exists(self.pointer):
            return None
        with open(self.pointer) as handle:
            return self._resolve(json.load(handle), self.save_dir)

    @staticmethod
    def _resolve(record, directory):
        record = dict(record)
        for key in ('params', 'states'):
            if record.get(key):
                record[key] = os.path.join(directory, record[key])
        return record

    def find(self, resume_from):
        """``'latest'``, a checkpoint JSON, or a ``.params`` file (with its ``.states`` beside
        it when present) -> a record with ``params``, ``states`` (or None) and ``epoch``."""
        if resume_from == 'latest':
            record = self.latest()
            if record is None:
                raise FileNotFoundError(f'no checkpoint to resume from in {self.save_dir} '
                                        f'(expected {os.path.basename(self.pointer)})')
            return record
        path = os.path.expanduser(resume_from)
        if not os.path.exists(path):
            raise FileNotFoundError(f'the checkpoint to resume from, {path}, does not exist')
        if path.endswith('.json'):
            with open(path) as handle:
                return self._resolve(json.load(handle), os.path.dirname(os.path.abspath(path)))
        return self._from_params_file(path)

    def _from_params_file(self, path):
        """A ``<model>-epochNNNN.params`` file continues after epoch NNNN, with the history
        of the run's record up to it; any other weights file starts at epoch 0."""
        states = os.path.splitext(path)[0] + '.states'
        record = {'params': path, 'states': states if os.path.exists(states) else None,
                  'epoch': None}
        match = re.fullmatch(r'(.+)-epoch(\d+)\.params', os.path.basename(path))
        if match:
            record['epoch'] = int(match.group(2))
            pointer = os.path.join(os.path.dirname(os.path.abspath(path)),
                                   f'{match.group(1)}-checkpoint.json')
            if os.path.exists(pointer):
                with open(pointer) as handle:
                    run = json.load(handle)
                history = [r for r in run.get('history', []) if r['epoch'] <= record['epoch']]
                score = score_name(run)
                record.update(history=history, seed=run.get('seed'), recipe=run.get('recipe'),
                              best=max((r[score] for r in history), default=None))
        return record
