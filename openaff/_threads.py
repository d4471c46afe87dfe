"""MXNet's CPU thread count on machines without simultaneous multithreading (SMT).

On x86, MXNet 1.9.1 starts with half the processors as its OpenMP thread count
(``src/engine/openmp.cc``), assuming two hardware threads per core. On a machine without SMT,
such as most cloud VMs with few vCPUs, that leaves half the cores idle: on this project's
2-core machine ResNet-50 inference ran at 0.80 s per batch of 8 instead of 0.44 s.
"""
from __future__ import annotations

import os
import platform
import sys
from contextlib import contextmanager

THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MXNET_OMP_MAX_THREADS')
X86 = ('x86_64', 'amd64', 'i386', 'i686', 'x86')
SMT_STATE = '/sys/devices/system/cpu/smt/active'
_READ = object()  # argument not given: read the real machine
_APPLIED = {}  # the count given to this process's MXNet, for reports


def smt_active(path=SMT_STATE):
    """True or False as the Linux kernel reports it, None where it does not say."""
    try:
        with open(path) as handle:
            return handle.read().strip() == '1'
    except OSError:
        return None


def usable_cpus():
    """Processors this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_all_cores(environ=None, machine=None, smt=_READ, cpus=None, mxnet_loaded=None):
    """Give MXNet every usable processor when it would halve them for SMT the machine lacks.

    Sets ``MXNET_OMP_MAX_THREADS`` (read once, when mxnet is imported) and returns the count,
    or returns None and changes nothing: when mxnet is already imported, when the user set
    ``OMP_NUM_THREADS`` or ``MXNET_OMP_MAX_THREADS``, off x86, when SMT is on or unknown, in
    parameter-server jobs, or when it would give one thread. Horovod ranks on one host share
    its processors (``HOROVOD_LOCAL_SIZE``).
    The arguments stand in for the real machine in tests.
    """
    environ = os.environ if environ is None else environ
    mxnet_loaded = 'mxnet' in sys.modules if mxnet_loaded is None else mxnet_loaded
    machine = (platform.machine() if machine is None else machine).lower()
    smt = smt_active() if smt is _READ else smt
    cpus = usable_cpus() if cpus is None else cpus
    if mxnet_loaded or any(name in environ for name in THREAD_VARIABLES):
        return None
    if machine not in X86 or smt is not False or 'DMLC_ROLE' in environ:
        return None  # parameter-server jobs: the number of processes per host is not known
    # horovodrun tells each rank how many ranks share its host
    local_size = environ.get('HOROVOD_LOCAL_SIZE', '1').strip()
    threads = cpus // max(1, int(local_size) if local_size.isdigit() else 1)
    if threads < 2:
        return None
    environ['MXNET_OMP_MAX_THREADS'] = str(threads)
    return threads


@contextmanager
def mxnet_on_all_cores():
    """Import mxnet inside this block to give it every usable processor where it would halve
    them for SMT the machine lacks (see :func:`use_all_cores`). The variable is removed again
    afterwards, so that child processes (launched workers, Horovod ranks) decide for
    themselves instead of inheriting this process's count."""
    threads = use_all_cores()
    try:
        yield threads
    finally:
        if threads:
            os.environ.pop('MXNET_OMP_MAX_THREADS', None)
            _APPLIED['threads'] = threads


def mxnet_threads(environ=None, machine=None, cpus=None):
    """The OpenMP thread count MXNet 1.9.1 works with under ``environ`` (for reports):
    ``OMP_NUM_THREADS`` wins, then ``MXNET_OMP_MAX_THREADS`` caps the processor count, else
    half the processors on x86."""
    if environ is None and 'threads' in _APPLIED:
        return _APPLIED['threads']
    environ = os.environ if environ is None else environ
    machine = (platform.machine() if machine is None else machine).lower()
    cpus = usable_cpus() if cpus is None else cpus
    if environ.get('OMP_NUM_THREADS', '').strip().isdigit():
        return int(environ['OMP_NUM_THREADS'])
    if environ.get('MXNET_OMP_MAX_THREADS', '').strip().isdigit():
        return min(cpus, int(environ['MXNET_OMP_MAX_THREADS']))
    return max(1, cpus // 2) if machine in X86 else cpus
