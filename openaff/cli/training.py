"""What both training commands share: devices, precision, scale-out options, logging set-up and
the fit-and-report step."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import tempfile
import traceback

import mxnet as mx

from ..engine import setup_logging
from ..engine.devices import cpu_runs_bfloat16, default_devices, describe_devices, parse_devices
from .args import fail


def contexts_of(opt, cluster=None):
    """The devices of this process: ``--devices`` when given, else the original scripts'
    ``--gpus`` / ``--num-gpus`` (this worker's share of them when several workers share a
    host), the CPU when there is no GPU. ``ValueError`` names a bad ``--devices``."""
    named = None
    if getattr(opt, 'devices', None):
        try:
            named = parse_devices(opt.devices)
        except ValueError as err:
            raise ValueError(f'--devices {opt.devices}: {err}') from None
        if cluster is None:
            return named
    local = dict(local_rank=cluster.local_rank, local_size=cluster.local_size) if cluster else {}
    default = default_devices(gpus=getattr(opt, 'gpus', None),
                              num_gpus=getattr(opt, 'num_gpus', None), **local)
    return cluster.contexts(default, named) if cluster else default


def add_devices_arg(parser, what='trains'):
    """``--devices``: the one way every command names its devices."""
    parser.add_argument('--devices', default=None, metavar='LIST',
                        help=f'devices it {what} on, e.g. gpu:0,gpu:1 or cpu:1,cpu:2 (overrides '
                             f'--gpus/--num-gpus; default: the GPUs those name, else the CPU)')


def clamp_workers(requested):
    """The original default (96 workers) on a small machine only adds processes."""
    return max(0, min(requested, os.cpu_count() or 1))


def resolve_seed(seed):
    return seed if seed is not None else random.SystemRandom().randrange(2 ** 31)


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


def add_run_args(parser):
    """Options both scripts share for what happens to an earlier run in ``--save-dir``."""
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an earlier run of the same model in --save-dir (without '
                             'it, such a run is kept and the command refuses to start; '
                             '--resume-from latest continues it)')


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


def add_scale_out_args(parser):
    """Options both scripts share for many devices and workers, and SyncBN (the recipe's
    ``--dist-timeout``, ``--dtype`` and ``--amp`` come with the recipe options)."""
    from ..engine.distributed import KVSTORES
    add = parser.add_argument
    add('--kvstore', default='device', choices=KVSTORES,
        help='gradient exchange: device/local/nccl in one process; dist_sync, dist_device_sync, '
             'dist_async under openaff-launch; horovod under horovodrun')
    add('--lr-scaling', default='none', choices=('none', 'linear'),
        help='linear: multiply --lr by the number of workers (the global batch grows with '
             'them); none: --lr is used as given')
    add('--syncbn', action='store_true',
        help='SyncBatchNorm: batch statistics over all GPUs of a worker instead of per GPU')
    add_devices_arg(parser)


def summarize_and_exit(net, input_size=32):
    """``--summary``: print the parameter and FLOP table of ``net`` instead of training."""
    from ..apps.summary import summarize
    net.initialize(mx.init.Xavier())
    result = summarize(net, (1, 3, input_size, input_size))
    print(result.table())
    print(result.totals())
    return 0


def start_cluster(kvstore):
    """The :class:`~openaff.engine.distributed.Cluster` of this process; set-up errors name
    the option."""
    from ..engine.distributed import Cluster, DistributedError
    try:
        return Cluster.create(kvstore)
    except DistributedError as err:
        raise DistributedError(f'--kvstore {kvstore} {err}') from None


def resolve_precision(dtype, amp, contexts):
    """``(dtype, notes)``: the precision the devices can train in, with notes for the log.
    float16 falls back to float32 on CPUs (mxnet 1.9.1 has no float16 GEMM there); AMP keeps
    the network float32 and must be set up before the network is built, so this runs first."""
    notes = []
    on_cpu = all(c.device_type == 'cpu' for c in contexts)
    if amp and dtype != 'float32':
        notes.append(f'--amp chooses the precision per operator: the network stays float32 '
                     f'(--dtype {dtype} ignored)')
        dtype = 'float32'
    if dtype != 'float32' and on_cpu:
        notes.append(f'{dtype} needs a GPU (mxnet 1.9.1 has no float16 GEMM on the CPU): '
                     'training in float32')
        dtype = 'float32'
    if amp:
        from mxnet.contrib import amp as mx_amp
        target = 'bfloat16' if on_cpu else 'float16'
        if on_cpu and not cpu_runs_bfloat16():
            raise ValueError('--amp on CPUs trains in bfloat16, whose oneDNN kernels need '
                             'AVX-512, which this CPU lacks: train in float32 (drop --amp)')
        mx_amp.init(target_dtype=target)
        notes.append(f'AMP: {target} where mxnet.contrib.amp deems it safe, float32 elsewhere')
    return dtype, notes


def apply_syncbn(net, syncbn, contexts):
    """``--syncbn``: one SyncBatchNorm over the worker's GPUs (a no-op on one device)."""
    if not syncbn or len(contexts) < 2:
        return
    if any(c.device_type == 'cpu' for c in contexts):
        # see openaff.batchnorm._SYNC_DEVICE_TYPES: one worker thread per CPU device and
        # workspaces shared by all of them (measured: training hangs in its first step)
        raise ValueError('--syncbn synchronises GPUs: on CPU devices mxnet 1.9.1 deadlocks in '
                         'SyncBatchNorm (one worker thread per CPU device, shared workspaces)')
    from ..batchnorm import use_sync_batchnorm
    use_sync_batchnorm(net, len(contexts))


def scaled_lr(lr, scaling, cluster):
    """``--lr-scaling linear`` multiplies the learning rate by the number of workers."""
    return lr * cluster.size if scaling == 'linear' else lr


def shard_of(cluster, train):
    """(num_parts, part_index) of this worker's data: training is always split; validation
    too when the workers can sum their metrics (not under dist_async)."""
    if train or cluster.can_reduce:
        return cluster.size, cluster.rank
    return 1, 0


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
