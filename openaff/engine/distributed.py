"""The processes of one training run and how they talk: a single process (kvstore ``device``,
``local`` or ``nccl``), MXNet's parameter server (``dist_sync``, ``dist_device_sync``,
``dist_async``: start with ``openaff-launch``) or Horovod (``horovod``: start with
``horovodrun``).

The engine asks a :class:`Cluster` for its trainer, for the batch size that makes the gradient
a mean over the global batch, for sums of metrics over all workers, and for averaged BatchNorm
running statistics, so that every worker evaluates and saves the same network and rank 0
reports global numbers. A :class:`Watchdog` ends a worker whose peers died instead of letting
it wait in a collective forever.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time

import mxnet as mx
import numpy as np
from mxnet import gluon

from .devices import first_copy

__all__ = ['KVSTORES', 'Cluster', 'DistributedError', 'HorovodTrainer', 'Watchdog',
           'import_horovod', 'LOCAL_RANK_ENV', 'LOCAL_SIZE_ENV']

KVSTORES = ('device', 'local', 'nccl', 'dist_sync', 'dist_device_sync', 'dist_async', 'horovod')
LOG = logging.getLogger('openaff')

# the gluon Trainer keys the parameters 0..P-1; the cluster's own reductions use keys above them
# (mxnet allows no mix of int and str keys in one kvstore)
_FIRST_OWN_KEY = 1 << 24

# openaff.apps.launch tells each parameter-server worker its index among the workers of its host and
# their number, so that workers sharing a host can split its GPUs (Horovod knows its own)
LOCAL_RANK_ENV, LOCAL_SIZE_ENV = 'OPENAFF_LOCAL_RANK', 'OPENAFF_LOCAL_SIZE'

HOROVOD_INSTALL = ('HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 '
                   'HOROVOD_WITHOUT_PYTORCH=1 pip install --no-build-isolation horovod==0.28.1 '
                   '(or: bash tools/install_horovod.sh)')


class DistributedError(RuntimeError):
    """A distributed run cannot start or go on (missing launcher, Horovod, a dead peer)."""


def import_horovod():
    """``horovod.mxnet``, or a :class:`DistributedError` that says how to build it."""
    try:
        import horovod.mxnet as hvd
    except ImportError as err:
        raise DistributedError(f'needs Horovod built with MXNet support ({err}); '
                               f'install it with: {HOROVOD_INSTALL}') from None
    return hvd


class Cluster:
    """One training run's workers (Dai et al., "Attentional Feature Fusion", WACV 2021, trained
    on one node of 4 GPUs; this scales the same recipe out).

    Use :meth:`create` with a kvstore name (:data:`KVSTORES`). ``rank``/``size`` are the
    worker's index and the number of workers; ``local_rank``/``local_size`` its index among the
    workers of its host and their number (Horovod's, or what ``openaff.apps.launch`` set in
    ``OPENAFF_LOCAL_RANK``/``OPENAFF_LOCAL_SIZE``; 0 and 1 in one process).
    """

    def __init__(self, kvstore='device', rank=0, size=1, local_rank=0, store=None, hvd=None,
                 local_size=1):
        self.kvstore, self.rank, self.size = kvstore, rank, size
        self.local_rank, self.local_size = local_rank, local_size
        self._store, self._hvd = store, hvd
        self._keys, self._initialised = {}, set()

    @classmethod
    def create(cls, kvstore='device'):
        if kvstore not in KVSTORES:
            raise ValueError(f'kvstore must be one of {", ".join(KVSTORES)}, got {kvstore!r}')
        if kvstore == 'horovod':
            hvd = import_horovod()
            hvd.init()
            return cls(kvstore, hvd.rank(), hvd.size(), hvd.local_rank(), hvd=hvd,
                       local_size=hvd.local_size())
        if kvstore.startswith('dist'):
            if 'DMLC_ROLE' not in os.environ:
                raise DistributedError(
                    'runs as one worker of a parameter-server job: start it '
                    'with openaff-launch -n WORKERS -s SERVERS -- python ... '
                    '(it sets DMLC_ROLE and the other DMLC_* variables)')
            local_rank, local_size = _local_placement()
            store = mx.kv.create(kvstore)
            return cls(kvstore, store.rank, store.num_workers, local_rank, store=store,
                       local_size=local_size)
        return cls(kvstore)

    # ------------------------------------------------------------------ facts
    @property
    def distributed(self):
        return self.kvstore.startswith('dist') or self.kvstore == 'horovod'

    @property
    def is_chief(self):
        """Rank 0: the only worker that writes logs, checkpoints and plots."""
        return self.rank == 0

    @property
    def synchronous(self):
        """Every worker holds the same weights after every step."""
        return self.kvstore != 'dist_async'

    def contexts(self, default, devices=None):
        """The devices this worker trains on: ``devices`` when named (``--devices``), else
        ``default`` (the command's choice), except under Horovod, where each rank takes the
        GPU of its local rank, or the CPU on a machine without GPUs. A rank whose GPU does
        not exist is a :class:`DistributedError`: training it on the CPU would make it the
        straggler every all-reduce waits for, in another precision than its peers."""
        if devices:
            devices = list(devices)
            if (self.kvstore == 'horovod' and self.local_size > 1
                    and any(c.device_type == 'gpu' for c in devices)
                    and 'CUDA_VISIBLE_DEVICES' not in os.environ):
                # horovodrun hands every rank the same command line
                raise DistributedError(
                    f'names the same GPUs for all {self.local_size} Horovod ranks of this host '
                    f'(--devices {",".join(f"gpu:{c.device_id}" for c in devices)}); leave '
                    f'--devices out (one GPU per rank) or give each rank its own GPUs through '
                    f'CUDA_VISIBLE_DEVICES')
            return devices
        if self.kvstore != 'horovod':
            return list(default)
        available = mx.context.num_gpus()
        if not available:
            return [mx.cpu()]
        if self.local_rank >= available:
            raise DistributedError(
                f'Horovod rank {self.rank} has local rank {self.local_rank}, but this host has '
                f'{available} GPU(s): start at most {available} rank(s) per host '
                f'(horovodrun -H HOST:{available})')
        return [mx.gpu(self.local_rank)]

    def describe(self):
        if not self.distributed:
            return f'kvstore {self.kvstore}, one process'
        return f'kvstore {self.kvstore}, worker {self.rank} of {self.size}'

    # ------------------------------------------------------------------ training
    def make_trainer(self, params, optimizer, optimizer_params, local_update=False):
        """The gluon Trainer for this cluster. Synchronous parameter-server runs sum gradients
        on the servers and update locally (``update_on_kvstore=False``), so the servers never
        need the optimizer and the cluster can use the store for its own sums too.

        ``local_update`` keeps a one-process kvstore (``device``, ``nccl``) from updating the
        weights inside the store: AMP's loss scaler skips an overflowing step in
        ``Trainer._update``, which an update on the kvstore bypasses (the step would already
        have written inf into the weights)."""
        if self.kvstore == 'horovod':
            return HorovodTrainer(params, optimizer, optimizer_params, hvd=self._hvd)
        if self._store is not None:
            return gluon.Trainer(params, optimizer, optimizer_params, kvstore=self._store,
                                 update_on_kvstore=not self.synchronous)
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=self.kvstore,
                             update_on_kvstore=False if local_update else None)

    def step_size(self, local_batch):
        """What to pass to ``trainer.step`` for a gradient averaged over the global batch, given
        this worker's batch (over all its devices): synchronous parameter servers and
        :class:`HorovodTrainer` sum the gradients of all workers, so the step divides by the
        global batch. ``dist_async`` applies each worker's gradient on its own."""
        if self.distributed and self.synchronous:
            return local_batch * self.size
        return local_batch

    def broadcast_parameters(self, net):
        """Rank 0's weights on every worker and every device of it (the parameter-server
        trainer does this itself on its first step; Horovod needs it done). A parameter whose
        shape is not known yet is broadcast when it is initialised, in the first forward."""
        if self.kvstore != 'horovod' or self.size == 1:
            return
        for name, param in sorted(net.collect_params().items()):
            key = f'openaff.parameter.{name}'
            try:
                param.list_data()
            except gluon.parameter.DeferredInitializationError:
                _broadcast_once_initialised(self._hvd, param, key)
                continue
            _broadcast_copies(self._hvd, param, key)

    # ------------------------------------------------------------------ reductions
    def _key(self, name):
        return self._keys.setdefault(name, _FIRST_OWN_KEY + len(self._keys))

    def allreduce(self, values, name, average=False):
        """Element-wise sum (or mean) over the workers of a flat float array; every worker
        calls it with the same ``name`` and length, in the same order."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if not self.distributed or self.size == 1:
            return values
        if self.kvstore == 'horovod':
            total = self._hvd.allreduce(mx.nd.array(values, dtype='float64'), average=False,
                                        name=f'openaff.{name}').asnumpy()
        elif self.synchronous:
            total = self._store_sum(values, name)
        else:
            raise DistributedError('dist_async has no collective sums; metrics stay per worker')
        return total / self.size if average else total

    def _store_sum(self, values, name):
        # float32 like the gradients: the servers handle one element type reliably
        key = self._key(name)
        array = mx.nd.array(values, dtype='float32')
        if key not in self._initialised:
            self._store.init(key, mx.nd.zeros(array.shape, dtype='float32'))
            self._initialised.add(key)
        out = mx.nd.zeros(array.shape, dtype='float32')
        self._store.push(key, array)
        self._store.pull(key, out=out)
        return out.asnumpy().astype(np.float64)

    @property
    def can_reduce(self):
        return self.synchronous or not self.distributed

    def synchronize(self, net):
        """Replace every parameter by its mean over the workers. BatchNorm running statistics
        differ because each worker saw only its shard; the weights should not, but mxnet
        1.9.1's dist_sync lets a rare step leave a few weights 1e-6 apart between workers
        (cause not pinned down), so they are averaged too: the network evaluated and saved
        is then one and the same on every worker. Runs once an epoch; one flat reduction."""
        if not self.distributed or self.size == 1 or not self.can_reduce:
            return
        params = list(net.collect_params().values())
        flat = np.concatenate([first_copy(p).asnumpy().ravel() for p in params])
        mean = self.allreduce(flat, 'parameters', average=True)
        from ..batchnorm import overwrite
        offset = 0
        for param in params:
            size = int(np.prod(param.shape))
            overwrite(param, mean[offset:offset + size])
            offset += size

    def parameter_digests(self, net):
        """Every worker's SHA-1 of its parameters (as 16-bit words summed into place), so rank
        0 can tell whether the workers ended with identical networks."""
        digest = hashlib.sha1()
        for name, param in sorted(net.collect_params().items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(first_copy(param).asnumpy()).tobytes())
        words = np.frombuffer(digest.digest(), dtype='>u2').astype(np.float64)
        if not self.distributed or self.size == 1:
            return [digest.hexdigest()]
        if not self.can_reduce:
            return None
        table = np.zeros((self.size, words.size))
        table[self.rank] = words
        gathered = self.allreduce(table, 'digests').reshape(self.size, words.size)
        return [b''.join(int(w).to_bytes(2, 'big') for w in row).hex() for row in gathered]

    def broadcast_int(self, value):
        """Rank 0's non-negative integer (< 2**48) on every worker: e.g. a random seed. Call
        it once per run (the parameter-server store initialises a key once)."""
        if not self.distributed or self.size == 1:
            return value
        # 16-bit pieces stay exact in any float format
        pieces = mx.nd.array([(value >> s) & 0xFFFF for s in (32, 16, 0)], dtype='float32')
        if self.kvstore == 'horovod':
            pieces = self._hvd.broadcast(pieces, root_rank=0, name='openaff.broadcast_int')
        else:  # the store keeps the value rank 0 initialised the key with
            out = mx.nd.zeros(pieces.shape, dtype='float32')
            self._store.broadcast(self._key('broadcast_int'), pieces, out=out)
            pieces = out
        return int(sum(int(p) << s for p, s in zip(pieces.asnumpy(), (32, 16, 0))))


def _local_placement():
    """(local rank, local size) of a parameter-server worker, as ``openaff.apps.launch`` set them;
    (0, 1) for workers started otherwise."""
    values = []
    for name, default in ((LOCAL_RANK_ENV, 0), (LOCAL_SIZE_ENV, 1)):
        text = os.environ.get(name, '').strip()
        if text and not text.isdigit():
            raise DistributedError(f'{name}={text!r} is not a non-negative integer')
        values.append(int(text) if text else default)
    rank, size = values
    if size < 1 or rank >= size:
        raise DistributedError(f'{LOCAL_RANK_ENV}={rank} must be below {LOCAL_SIZE_ENV}={size}')
    return rank, size


def _broadcast_copies(hvd, param, key):
    copies = param.list_data()
    hvd.broadcast_(copies[0], root_rank=0, name=key)
    for other in copies[1:]:  # the engine orders the copies after the broadcast
        copies[0].copyto(other)


def _broadcast_once_initialised(hvd, param, key):
    """Broadcast ``param`` right after its deferred initialisation (every rank initialises
    its parameters in the same order, in the first forward pass)."""
    initialise = param._init_impl

    def initialise_then_broadcast(*args, **kwargs):
        del param._init_impl  # back to the class's method; one broadcast only
        initialise(*args, **kwargs)
        _broadcast_copies(hvd, param, key)

    param._init_impl = initialise_then_broadcast


class HorovodTrainer(gluon.Trainer):
    """A gluon Trainer whose gradients are summed over every device of every Horovod rank.

    ``horovod.mxnet.DistributedTrainer`` all-reduces only each parameter's gradient on the
    rank's first device and leaves the others alone, so a rank on several devices would step
    each device with its own gradient and the copies would drift apart. Here each parameter's
    gradients are first summed on the rank's first device, then summed over the ranks
    (``hvd.Sum``), then copied to the other devices; every device then applies the same sum,
    and ``Cluster.step_size`` divides it by the global batch. ``hvd`` is ``horovod.mxnet``
    after ``hvd.init()``.
    """

    def __init__(self, params, optimizer, optimizer_params=None, hvd=None):
        if hvd is None:
            hvd = import_horovod()
        super().__init__(params, optimizer, optimizer_params, kvstore=None)
        self._hvd = hvd

    def _allreduce_grads(self):
        ranks = self._hvd.size()
        for index, param in enumerate(self._params):
            if param.grad_req == 'null':
                continue
            grads = param.list_grad()
            total = grads[0]
            for other in grads[1:]:
                total += other.as_in_context(total.context)
            if ranks > 1:
                # names by position: every rank builds the same network in the same order
                self._hvd.allreduce_(total, op=self._hvd.Sum, name=f'openaff.gradient.{index}',
                                     priority=-index)
            for other in grads[1:]:
                total.copyto(other)


class Watchdog:
    """Ends the process when no progress was reported for ``timeout`` seconds.

    A worker whose peer died waits in a collective (a kvstore pull, a Horovod allreduce) that
    never returns. The engine calls :meth:`beat` after every step, evaluation batch and
    checkpoint; when the beats stop for ``timeout`` seconds, the watchdog logs why and exits
    the process with status 3 (blocked native calls cannot be interrupted otherwise).
    """

    EXIT_CODE = 3

    def __init__(self, timeout, describe=''):
        self.timeout, self.describe = timeout, describe
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    def beat(self):
        self._last = time.monotonic()

    def __enter__(self):
        if self.timeout and self.timeout > 0:
            self.beat()
            self._thread = threading.Thread(target=self._watch, name='openaff-watchdog',
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        return False

    def _watch(self):
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                message = (f'error: no training progress for {idle:.0f} s ({self.describe}): '
                           f'another worker or a server has probably died; stopping '
                           f'(the recipe\'s dist_timeout sets this limit)')
                LOG.error('%s', message)
                for handler in LOG.handlers:
                    handler.flush()
                print(message, file=sys.stderr, flush=True)
                os._exit(self.EXIT_CODE)
