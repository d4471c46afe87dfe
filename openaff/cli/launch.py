"""``openaff-launch`` (``python -m openaff.cli.launch``): start and supervise an MXNet
parameter-server job (see :mod:`openaff.apps.launch` for how the roles are set up).

    openaff-launch -n 2 -s 1 -- python train_cifar.py --kvstore dist_sync ...
"""
from __future__ import annotations

import argparse
import shlex
import sys

from ..apps.launch import DEFAULT_SSH, Job, build_processes, read_hostfile
from .args import non_negative_float, positive_int


def build_parser():
    p = argparse.ArgumentParser(
        prog='openaff-launch',
        usage='openaff-launch -n WORKERS [-s SERVERS] [-H HOSTFILE] [options] '
              '-- COMMAND ...',
        description='Start an MXNet parameter-server job (--kvstore dist_sync, '
                    'dist_device_sync, dist_async): the scheduler, the servers and the workers, '
                    'each worker running COMMAND; stop them all when one fails. Horovod jobs '
                    'use horovodrun instead.')
    p.add_argument('-n', '--num-workers', type=positive_int, required=True, metavar='N',
                   help='number of workers (each runs COMMAND)')
    p.add_argument('-s', '--num-servers', type=positive_int, default=1, metavar='S',
                   help='number of parameter servers (default 1)')
    p.add_argument('-H', '--hostfile', metavar='FILE',
                   help='hosts, one per line ("host", "host:K" or "host slots=K"); servers '
                        'then workers go round-robin over them (default: all on localhost)')
    p.add_argument('--ssh', default=DEFAULT_SSH, metavar='CMD',
                   help=f'how to run a command on another host (default: {DEFAULT_SSH!r})')
    p.add_argument('--scheduler-host', metavar='ADDR',
                   help="the scheduler's address, DMLC_PS_ROOT_URI (default 127.0.0.1; with a "
                        "hostfile, this machine's address)")
    p.add_argument('--port', type=int, metavar='P',
                   help="the scheduler's port, DMLC_PS_ROOT_PORT (default: a free port)")
    p.add_argument('--grace', type=non_negative_float, default=10.0, metavar='SECONDS',
                   help='after the workers succeed, how long servers and the scheduler may take '
                        'to exit before they are stopped; also how long a stopped process gets '
                        'between SIGTERM and SIGKILL (default 10)')
    p.add_argument('--verbose', action='store_true', help='print what is started and how')
    p.add_argument('command', nargs=argparse.REMAINDER, metavar='COMMAND',
                   help='the worker command, after --')
    return p


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    tail = None
    if '--' in argv:
        cut = argv.index('--')
        argv, tail = argv[:cut], argv[cut + 1:]
    args = p.parse_args(argv)
    if tail is not None:
        if args.command:
            p.error(f'unexpected arguments before --: {shlex.join(args.command)}')
        args.command = tail
    if not args.command:
        p.error('no worker command: give it after --, e.g. -- python train_cifar.py '
                '--kvstore dist_sync')
    if args.hostfile is not None:
        try:
            args.hosts = read_hostfile(args.hostfile)
        except (OSError, ValueError) as err:
            p.error(f'--hostfile: {err}')
    else:
        args.hosts = None
    if args.port is not None and not 0 < args.port < 65536:
        p.error(f'--port must be between 1 and 65535, got {args.port}')
    try:
        shlex.split(args.ssh)
    except ValueError as err:
        p.error(f'--ssh: {err}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    processes = build_processes(args.command, args.num_workers, args.num_servers, args.hosts,
                                args.scheduler_host, args.port, args.ssh)
    return Job(processes, grace=args.grace, verbose=args.verbose).run()


if __name__ == '__main__':
    sys.exit(main())
