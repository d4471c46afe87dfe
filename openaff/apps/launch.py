"""Starting and supervising an MXNet parameter-server job (``--kvstore dist_sync``,
``dist_device_sync`` or ``dist_async``): one scheduler, S servers and N workers.

    openaff-launch -n 2 -s 1 -- python train_cifar.py --kvstore dist_sync ...
    openaff-launch -n 4 -s 2 -H hosts.txt -- python train_imagenet.py --kvstore dist_sync

MXNet's parameter server (ps-lite) gives every process a role through environment variables:

* ``DMLC_ROLE=scheduler``: the rendezvous point. Every other process connects to it at
  ``DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT``; it tells them about each other, runs the barriers and
  exits once every node has shut down its kvstore.
* ``DMLC_ROLE=server``: holds a shard of the parameters and sums the pushed gradients (or runs
  the optimizer, with ``update_on_kvstore``).
* ``DMLC_ROLE=worker``: the training script; ``mx.kv.create('dist_sync')`` makes it a node.

``DMLC_NUM_SERVER`` and ``DMLC_NUM_WORKER`` tell each of them how many nodes to wait for, and
``DMLC_NODE_HOST`` the address a node announces (set here when a hostfile is given, for hosts
with several network interfaces). Each worker also gets ``OPENAFF_LOCAL_RANK`` and
``OPENAFF_LOCAL_SIZE``, its index among the workers of its host and their number, so that
workers sharing a host can split its GPUs (``--gpus 0,1,2,3`` for two workers: 0,1 and 2,3).
Importing mxnet with ``DMLC_ROLE`` set to ``scheduler`` or ``server`` runs that role's loop
inside the import and exits the process when the job ends, so the scheduler and the servers are
just ``python -c 'import mxnet'``.

This launcher sets those variables, starts the scheduler (always on this machine), the servers
and then the workers (round-robin over the hosts of ``--hostfile``; through ``--ssh`` on other
hosts, which must see the same working directory and Python at the same paths), and watches
them: when a worker fails, or a server or the scheduler dies, it says which one and how, stops
all the others (their whole process groups, so DataLoader children go too) and exits non-zero.
A process on another host is stopped by ending its ssh client; whether the remote command
follows depends on the ssh setup (it does when ssh allocates a terminal, ``--ssh 'ssh -tt'``).

Horovod jobs (``--kvstore horovod``) do not use this launcher; start them with ``horovodrun``::

    horovodrun -np 2 -H localhost:2 --gloo python train_cifar.py --kvstore horovod ...
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

__all__ = ['Process', 'Job', 'read_hostfile', 'assign_hosts', 'build_processes',
           'local_placements']

PROG = 'openaff-launch'
DEFAULT_SSH = 'ssh -o BatchMode=yes -o StrictHostKeyChecking=no'
PS_COMMAND = [sys.executable, '-c', 'import mxnet']
# A server unpickles the optimizer a dist_async worker sends, learning-rate schedule included,
# which needs gluoncv; gluoncv cannot be imported while mxnet is still being imported (that is
# when mxnet runs the server loop), so the server imports both first, then starts the loop.
SERVER_COMMAND = [sys.executable, '-c', '; '.join([
    'import os', "role = os.environ.pop('DMLC_ROLE')", 'import mxnet, gluoncv',
    "os.environ['DMLC_ROLE'] = role",
    'from mxnet.kvstore.kvstore_server import _init_kvstore_server_module',
    '_init_kvstore_server_module()'])]
POLL_S = 0.2
# variables of this environment that remote processes get too (their own environment is the
# remote shell's); the launcher's own DMLC_* values take precedence
FORWARDED_PREFIXES = ('DMLC_', 'MXNET_', 'PS_')


def _error(message):
    print(f'{PROG}: error: {message}', file=sys.stderr, flush=True)


def _note(message):
    print(f'{PROG}: {message}', file=sys.stderr, flush=True)


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f'signal {number}'


def describe_exit(returncode):
    """``exited with status 3`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        return f'was killed by {_signal_name(-returncode)}'
    return f'exited with status {returncode}'


# ---------------------------------------------------------------------------- hosts

def read_hostfile(path):
    """The hosts of ``path``, one per line; ``#`` starts a comment. ``host slots=K`` or
    ``host:K`` lists the host K times in the round-robin cycle."""
    hosts = []
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            words = line.split('#', 1)[0].split()
            if not words:
                continue
            host, slots = words[0], '1'
            if len(words) == 2 and words[1].startswith('slots='):
                slots = words[1][len('slots='):]
            elif len(words) > 1:
                raise ValueError(f'{path}:{number}: expected "host", "host:K" or '
                                 f'"host slots=K", got {line.strip()!r}')
            elif host.count(':') == 1:  # host:K (a bare IPv6 address has several colons)
                host, slots = host.split(':')
            if not host or not slots.isdigit() or int(slots) < 1:
                raise ValueError(f'{path}:{number}: bad host line {line.strip()!r}')
            hosts.extend([host] * int(slots))
    if not hosts:
        raise ValueError(f'{path} lists no hosts')
    return hosts


def assign_hosts(hosts, num_servers, num_workers):
    """(server hosts, worker hosts): round-robin over ``hosts``, the servers first."""
    cycle = [hosts[i % len(hosts)] for i in range(num_servers + num_workers)]
    return cycle[:num_servers], cycle[num_servers:]


def local_names():
    """Names by which this machine may appear in a hostfile."""
    names = {'localhost', '127.0.0.1', '::1'}
    for lookup in (socket.gethostname, socket.getfqdn):
        try:
            name = lookup()
        except OSError:
            continue
        names.update({name, name.split('.')[0]})
    return names


def resolve(host):
    """``host``'s IPv4 address, or ``host`` itself when it does not resolve here."""
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def this_address(remote_hosts=()):
    """This machine's address as other hosts should see it: its hostname's address, or, where
    that is a loopback address (as ``/etc/hosts`` often makes it), the address of the interface
    that routes to the first remote host that resolves."""
    address = resolve(socket.gethostname())
    if not address.startswith('127.'):
        return address
    for host in remote_hosts:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((socket.gethostbyname(host), 9))  # no packet is sent
                return probe.getsockname()[0]
        except OSError:
            continue
    return address


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(('', 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------- processes

class Process:
    """One process of the job: its role, index and host, and the command that starts it.

    ``env`` holds the variables this launcher sets; a local process gets them on top of this
    environment, a remote one through ``env K=V`` in its ssh command line.
    """

    def __init__(self, role, index, host, command, env, local, ssh=None):
        self.role, self.index, self.host = role, index, host
        self.command, self.env, self.local = list(command), dict(env), local
        self.ssh = ssh
        self.popen = None
        self.returncode = None

    @property
    def name(self):
        return self.role if self.role == 'scheduler' else f'{self.role} {self.index}'

    def __str__(self):
        pid = self.popen.pid if self.popen else '-'
        return f'{self.name} (pid {pid}, {self.host})'

    def argv(self):
        """The local command line: the command itself, or ssh running it on its host."""
        if self.local:
            return self.command
        forwarded = {key: value for key, value in os.environ.items()
                     if key.startswith(FORWARDED_PREFIXES)}
        forwarded.update(self.env)
        remote = ' '.join([f'cd {shlex.quote(os.getcwd())} &&', 'env']
                          + [shlex.quote(f'{key}={value}') for key, value in forwarded.items()]
                          + [shlex.quote(word) for word in self.command])
        return shlex.split(self.ssh) + [self.host, remote]

    def start(self):
        env = dict(os.environ, **self.env) if self.local else None
        # a session of its own: stop() can then signal the whole process group
        self.popen = subprocess.Popen(self.argv(), env=env, start_new_session=True)

    def poll(self):
        """The exit status once it has ended (negative: the signal), else None."""
        if self.returncode is None and self.popen is not None:
            self.returncode = self.popen.poll()
        return self.returncode

    @property
    def running(self):
        return self.popen is not None and self.poll() is None

    def signal_group(self, number):
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, number)
        except (ProcessLookupError, PermissionError):
            pass


class Job:
    """A scheduler, servers and workers started together and stopped together."""

    def __init__(self, processes, grace=10.0, verbose=False):
        self.processes = list(processes)
        self.grace, self.verbose = grace, verbose
        self.workers = [p for p in self.processes if p.role == 'worker']
        self.others = [p for p in self.processes if p.role != 'worker']
        self._signal = None

    # ------------------------------------------------------------------ pieces
    def start(self):
        """Start the scheduler, the servers, then the workers; False (after stopping what
        started) if one cannot be started."""
        for process in self.processes:
            if self.verbose:
                overrides = ' '.join(f'{k}={v}' for k, v in process.env.items())
                _note(f'starting {process.name} on {process.host}: {overrides} '
                      f'{shlex.join(process.argv())}')
            try:
                process.start()
            except OSError as err:
                _error(f'cannot start {process.name} on {process.host}: {err}')
                self.stop(self.processes)
                return False
        return True

    def stop(self, processes):
        """SIGTERM to the process groups of ``processes``, SIGKILL to those left after the
        grace period; returns once the processes have ended."""
        processes = [p for p in processes if p.popen is not None]
        for process in processes:
            if process.running:
                process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while any(p.running for p in processes) and time.monotonic() < deadline:
            time.sleep(POLL_S / 4)
        for process in processes:
            # also ends children left behind by a leader that has exited
            process.signal_group(signal.SIGKILL)
        for process in processes:
            try:
                process.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:  # unkillable (uninterruptible sleep); give up
                pass
            process.poll()

    def failure(self):
        """The first process whose exit ends the job: a worker that did not exit 0, or a
        server or the scheduler that failed. (A server or the scheduler exiting 0 is no
        failure: ps-lite lets them exit once every worker has shut down its kvstore, which can
        be a moment before the worker processes themselves have exited.)"""
        for process in self.workers + self.others:
            code = process.poll()
            if code is not None and code != 0:
                return process
        return None

    def _on_signal(self, number, frame):
        self._signal = number

    def _fail(self, culprit, reason):
        others = [p for p in self.processes if p is not culprit and p.running]
        other = ' other' if culprit is not None else ''
        if others:
            plural = 'es' if len(others) != 1 else ''
            _error(f'{reason}; stopping the {len(others)}{other} process{plural}')
        else:
            _error(f'{reason}; no{other} process is running')
        self.stop(self.processes)

    # ------------------------------------------------------------------ whole job
    def run(self):
        """Start and supervise the job; the launcher's exit status."""
        previous = {number: signal.signal(number, self._on_signal)
                    for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _run(self):
        if not self.start():
            return 1
        while True:
            if self._signal is not None:
                self._fail(None, f'interrupted by {_signal_name(self._signal)}')
                return 128 + self._signal
            culprit = self.failure()
            if culprit is not None:
                self._fail(culprit, f'{culprit} {describe_exit(culprit.returncode)}')
                if culprit.role == 'worker' and culprit.returncode > 0:
                    return culprit.returncode
                return 1
            if all(w.poll() == 0 for w in self.workers):
                break
            time.sleep(POLL_S)
        return self._finish()

    def _finish(self):
        """Every worker succeeded: give the servers and the scheduler ``grace`` seconds to
        exit by themselves (they do once the workers' kvstores shut down), then stop them."""
        deadline = time.monotonic() + self.grace
        while any(p.running for p in self.others) and time.monotonic() < deadline:
            if self._signal is not None:
                break
            time.sleep(POLL_S / 2)
        left = [p for p in self.others if p.running]
        if left:
            if self.verbose:
                _note(f'every worker succeeded; stopping {", ".join(map(str, left))}')
            self.stop(left)
        if self._signal is not None:
            return 128 + self._signal
        if self.verbose:
            for process in self.others:
                _note(f'{process} {describe_exit(process.returncode)}')
        return 0


def build_processes(command, num_workers, num_servers, hosts=None, scheduler_host=None,
                    port=None, ssh=DEFAULT_SSH):
    """The scheduler, servers and workers of a job (not started)."""
    local = local_names()
    remote_hosts = [h for h in hosts or () if h not in local]
    if scheduler_host is None:
        scheduler_host = this_address(remote_hosts) if hosts else '127.0.0.1'
    common = {
        'DMLC_PS_ROOT_URI': scheduler_host,
        'DMLC_PS_ROOT_PORT': str(port or free_port()),
        'DMLC_NUM_SERVER': str(num_servers),
        'DMLC_NUM_WORKER': str(num_workers),
        'PYTHONUNBUFFERED': '1',
    }

    def make(role, index, host, argv, placement=None):
        is_local = host in local
        env = dict(common, DMLC_ROLE=role)
        if placement is not None:
            env['OPENAFF_LOCAL_RANK'], env['OPENAFF_LOCAL_SIZE'] = map(str, placement)
        if role == 'server':
            # mxnet 1.9.1's server answers a push-pull from the stored array right after
            # queueing the asynchronous copy of the merged gradient into it, so a worker can
            # read a half-written sum (seen as workers drifting apart by 1e-6); a synchronous
            # engine finishes the copy first, and a server only sums, so it costs nothing
            env['MXNET_ENGINE_TYPE'] = 'NaiveEngine'
        if hosts:
            env['DMLC_NODE_HOST'] = scheduler_host if is_local else resolve(host)
        return Process(role, index, 'localhost' if is_local else host, argv, env, is_local, ssh)

    server_hosts, worker_hosts = assign_hosts(hosts or ['localhost'], num_servers, num_workers)
    placements = local_placements(['localhost' if h in local else resolve(h)
                                  for h in worker_hosts])
    return ([make('scheduler', 0, 'localhost', PS_COMMAND)]
            + [make('server', i, h, SERVER_COMMAND) for i, h in enumerate(server_hosts)]
            + [make('worker', i, h, command, placements[i])
               for i, h in enumerate(worker_hosts)])


def local_placements(worker_hosts):
    """(index among the workers of the same host, number of workers on that host) for each
    worker, in order; hosts are compared as given (resolve names first to merge aliases)."""
    totals = {}
    for host in worker_hosts:
        totals[host] = totals.get(host, 0) + 1
    seen, placements = {}, []
    for host in worker_hosts:
        placements.append((seen.get(host, 0), totals[host]))
        seen[host] = seen.get(host, 0) + 1
    return placements

