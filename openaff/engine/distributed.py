"""The processes of one training run and how they talk: a single process (kvstore ``device``,
``local`` or ``nccl``), MXNet's parameter server (``dist_sync``, ``dist_device_sync``,
``dist_async``: start with ``python -m openaff.launch``) or Horovod (``horovod``: start with
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

__all__ = ['KVSTORES', 'Cluster', 'DistributedError', 'Watchdog', 'import_horovod']

KVSTORES = ('device', 'local', 'nccl', 'dist_sync', 'dist_device_sync', 'dist_async', 'horovod')
LOG = logging.getLogger('openaff')

# the gluon Trainer keys the parameters 0..P-1; the cluster's own reductions use keys above them
# (mxnet allows no mix of int and str keys in one kvstore)
_FIRST_OWN_KEY = 1 << 24

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

    Use :meth:`create` with a kvstore name (:data:`KVSTORES`). ``rank``/``size`` are the worker's index and
    the number of workers; ``local_rank`` its index on its host (Horovod).
    """

    def __init__(self, kvstore='device', rank=0, size=1, local_rank=0, store=None, hvd=None):
        self.kvstore, self.rank, self.size, self.local_rank = kvstore, rank, size, local_rank
        self._store, self._hvd = store, hvd
        self._keys, self._initialised = {}, set()

    @classmethod
    def create(cls, kvstore='device'):
        if kvstore not in KVSTORES:
            raise ValueError(f'kvstore must be one of {", ".join(KVSTORES)}, got {kvstore!r}')
        if kvstore == 'horovod':
            hvd = import_horovod()
            hvd.init()
            return cls(kvstore, hvd.rank(), hvd.size(), hvd.local_rank(), hvd=hvd)
        if kvstore.startswith('dist'):
            if 'DMLC_ROLE' not in os.environ:
                raise DistributedError(
                    'runs as one worker of a parameter-server job: start it '
                    'with python -m openaff.launch -n WORKERS -s SERVERS -- python ... '
                    '(it sets DMLC_ROLE and the other DMLC_* variables)')
            store = mx.kv.create(kvstore)
            return cls(kvstore, store.rank, store.num_workers, store=store)
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

    def contexts(self, default):
        """Horovod: one GPU per local rank (the CPU without one); otherwise ``default``."""
        if self.kvstore != 'horovod':
            return list(default)
        if self.local_rank < mx.context.num_gpus():
            return [mx.gpu(self.local_rank)]
        return [mx.cpu()]

    def describe(self):
        if not self.distributed:
            return f'kvstore {self.kvstore}, one process'
        return f'kvstore {self.kvstore}, worker {self.rank} of {self.size}'

    # ------------------------------------------------------------------ training
    def make_trainer(self, params, optimizer, optimizer_params):
        """The gluon Trainer for this cluster. Synchronous parameter-server runs sum gradients
        on the servers and update locally (``update_on_kvstore=False``), so the servers never
        need the optimizer and the cluster can use the store for its own sums too."""
        if self.kvstore == 'horovod':
            return self._hvd.DistributedTrainer(params, optimizer, optimizer_params)
        if self._store is not None:
            return gluon.Trainer(params, optimizer, optimizer_params, kvstore=self._store,
                                 update_on_kvstore=not self.synchronous)
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=self.kvstore)

    def step_size(self, local_batch):
        """What to pass to ``trainer.step`` for a gradient averaged over the global batch:
        Horovod's trainer divides by the worker count itself; the parameter servers sum."""
        if self._store is not None and self.synchronous:
            return local_batch * self.size
        return local_batch

    def broadcast_parameters(self, net):
        """Rank 0's weights on every worker (the parameter-server trainer does this itself on
        its first step, and Horovod's needs it done)."""
        if self.kvstore == 'horovod' and self.size > 1:
            self._hvd.broadcast_parameters(net.collect_params(), root_rank=0)

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
        flat = np.concatenate([p.data().asnumpy().ravel() for p in params])
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
            digest.update(np.ascontiguousarray(param.data().asnumpy()).tobytes())
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
