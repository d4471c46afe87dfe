"""Order-balanced timing: steps timed round-robin, every other round in reverse order, and ratios
taken over pairs of rounds so that order and drift cancel; peak memory in a fresh process."""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict

import mxnet as mx
import numpy as np


def _timed(step):
    tic = time.perf_counter()
    step()
    mx.nd.waitall()
    return time.perf_counter() - tic


def paired_times(steps, rounds, warmup):
    """Time several steps round-robin: ``rounds`` lists of one time per step (in ``steps``
    order). Every other round runs them in reverse order: a step timed right after another
    runs a few percent faster on a 2-core machine (a baseline timed against itself read 1.037x
    with a fixed order); :func:`balanced_ratio` pairs the rounds to cancel that."""
    for step in steps:
        for _ in range(warmup):
            step()
    mx.nd.waitall()
    times = []
    for index in range(rounds):
        order = list(range(len(steps)))[::-1 if index % 2 else 1]
        measured = {position: _timed(steps[position]) for position in order}
        times.append([measured[position] for position in range(len(steps))])
    return times


def balanced_ratio(rounds):
    """Median, over consecutive pairs of rounds (one in each order, see :func:`paired_times`),
    of the first step's total time over the second's: the order bias cancels within a pair,
    the machine's drift between pairs."""
    pairs = [rounds[index:index + 2] for index in range(0, len(rounds) - 1, 2)]
    return statistics.median(sum(r[0] for r in pair) / sum(r[1] for r in pair)
                             for pair in pairs)


def median_time(step, repeats, warmup):
    """Median seconds of one call of ``step`` (after ``warmup`` untimed calls)."""
    return statistics.median(times[0] for times in paired_times([step], repeats, warmup))


def inference_step(net, batch):
    """One forward pass, waited for (``net``: a Gluon block or any callable returning an
    NDArray)."""
    return lambda: net(batch).wait_to_read()


def training_step(net, batch, classes):
    """One NAG step on ``batch`` with fixed labels."""
    trainer = mx.gluon.Trainer(net.collect_params(), 'nag',
                               {'learning_rate': 1e-4, 'momentum': 0.9,
                                'multi_precision': batch.dtype == np.float16})
    labels = mx.nd.array(np.arange(batch.shape[0]) % classes, ctx=batch.context)
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with mx.autograd.record():
            loss = loss_fn(net(batch).astype('float32'), labels)
        loss.backward()
        trainer.step(batch.shape[0])
    return step


STEPS = {'infer': 'infer', 'latency': 'single', 'train': 'train'}


def timed(base, other, settings, metrics=('infer', 'latency', 'train')):
    """``{metric: (other's median seconds, base time / other's time)}``, each metric timed in
    rounds interleaved with ``base`` (see :func:`paired_times`); a metric one of the two
    candidates has no step for is left out."""
    out = {}
    for metric in metrics:
        pair = [getattr(base, STEPS[metric]), getattr(other, STEPS[metric])]
        if not all(pair):
            continue
        rounds = max(3, settings.repeats // 2) if metric == 'train' else settings.repeats
        times = paired_times(pair, rounds + rounds % 2, settings.warmup)
        out[metric] = (statistics.median(r[1] for r in times), balanced_ratio(times))
    return out


def peak_memory_mb(entry, settings):
    """Peak memory of a fresh process that builds ``entry`` and runs its inference (and
    training) steps once: host RSS on CPU, device memory in use on GPU. Returns NaN (and
    says why) if that process fails."""
    code = ('import json, sys; from openaff.apps.benchmark import probe_memory; '
            'print(probe_memory(*json.loads(sys.argv[1])))')
    command = [sys.executable, '-c', code, json.dumps([entry, asdict(settings)])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print(f'memory probe of {entry} failed: {done.stderr.strip()[-500:]}', file=sys.stderr)
        return float('nan')
    return float(done.stdout.split()[-1])


def peak_rss_mb():
    """This process's peak resident memory in MB. Linux's ``ru_maxrss`` carries the parent's
    resident size over ``fork`` + ``exec`` (the probes then grew with the harness process),
    so the high-water mark of this process's own address space (``VmHWM``) is used instead."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            line = next(line for line in status if line.startswith('VmHWM:'))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
