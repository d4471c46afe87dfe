"""Running a training command's engine: the log (its first lines), the fit with SIGTERM and
Ctrl-C turned into a kept checkpoint and an exit status, a failed distributed worker ending at
once, the best score reported; or, with ``--summary``, the network's table instead."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback

import mxnet as mx

from ..engine import setup_logging
from ..engine.devices import describe_devices
from .args import fail


def start_log(opt, log_file, chief=True, run=None):
    """The original first line: the option Namespace; then, with ``run`` (a dict of
    ``devices``, ``dtype``, ``amp``, ``cluster``), where and how the run trains. Distributed
    workers other than rank 0 keep no log file and print warnings and errors only."""
    import logging
    log = setup_logging(log_file if chief else None, logging.INFO if chief else logging.WARNING)
    log.info('%s', opt)
    if run:
        log.info('%s', run_header(**run))
    return log


def run_header(devices, dtype, amp, cluster):
    """One log line: the devices, the precision and the gradient exchange of a run."""
    precision = 'AMP (float32 weights, low precision per operator)' if amp else (
        dtype if dtype == 'float32' else f'{dtype} with float32 master weights')
    return (f'Devices: {describe_devices(devices)} | precision: {precision} | '
            f'{cluster.describe()}')


def summarize_and_exit(net, input_size=32):
    """``--summary``: print the parameter and FLOP table of ``net`` instead of training."""
    from ..apps.summary import summarize
    net.initialize(mx.init.Xavier())
    result = summarize(net, (1, 3, input_size, input_size))
    print(result.table())
    print(result.totals())
    return 0


def run_engine(engine, log, resume_from, report_best, start_epoch=0):
    """Fit, then report the best validation accuracy; the run's folder lock is released at
    the end, however it ends. A distributed worker that fails exits at once: waiting in
    ps-lite's or Horovod's shutdown for peers that are gone (or that wait for it) would hang
    the job."""
    from ..engine.checkpoint import release_claims
    try:
        return _fit_and_report(engine, resume_from, report_best, start_epoch)
    finally:
        release_claims()


def _fit_and_report(engine, resume_from, report_best, start_epoch):
    from ..engine import TrainingDiverged
    try:
        with _sigterm_as_interrupt():
            records = engine.fit(resume_from=resume_from, start_epoch=start_epoch)
    except TrainingDiverged as err:
        fail(f'{err}; the last finite checkpoint is kept (lower --lr, or add warm-up)')
        if engine.cluster.distributed:
            _exit_now(4)
        return 4
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        return fail(f'{"terminated (SIGTERM)" if terminated else "interrupted"}; '
                    f'{_kept_checkpoint(engine)}', status=143 if terminated else 130)
    except OSError as err:  # disk full, a folder removed under the run
        if engine.cluster.distributed:
            fail(f'{engine.cluster.describe()}: {err}')
            _exit_now(1)
        return fail(str(err), status=1)
    except Exception as err:  # pylint: disable=broad-except
        if not engine.cluster.distributed:
            raise
        if type(err).__name__ in _PEER_FAILURES:
            fail(f'{engine.cluster.describe()}: {type(err).__name__}: {err} '
                 f'(another worker has probably died)')
        else:
            traceback.print_exc()
        _exit_now(3)
    best = max(r[engine.task.score] for r in records) if records else engine.best
    report_best(best if best is not None else float('nan'))
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, what cluster schedulers send on preemption: handled as Ctrl-C is."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    def stop(signum, frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the default in place
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kept_checkpoint(engine):
    record = engine.checkpoints.latest() if engine.cluster.is_chief else None
    if not record:
        return 'no epoch had finished, so there is no checkpoint'
    return (f'the checkpoint of the last finished epoch is kept: {record["params"]} '
            f'(--resume-from latest continues)')


def _exit_now(status):
    import logging
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# what a collective raises when a peer is gone
_PEER_FAILURES = ('HorovodInternalError', 'HostsUpdatedInterrupt', 'MXNetError')
