"""MXNet's thread count on machines without SMT (openaff._threads)."""
import os
import subprocess
import sys

import pytest

from openaff._threads import mxnet_threads, smt_active, use_all_cores

NO_SMT = dict(machine='x86_64', smt=False, cpus=8, mxnet_loaded=False)


def test_no_smt_gets_every_processor():
    environ = {}
    assert use_all_cores(environ, **NO_SMT) == 8
    assert environ == {'MXNET_OMP_MAX_THREADS': '8'}
    assert mxnet_threads(environ, machine='x86_64', cpus=8) == 8


@pytest.mark.parametrize('change', [
    {'smt': True}, {'smt': None}, {'machine': 'aarch64'}, {'mxnet_loaded': True}, {'cpus': 1},
])
def test_left_to_mxnet(change):
    environ = {}
    assert use_all_cores(environ, **{**NO_SMT, **change}) is None
    assert environ == {}


@pytest.mark.parametrize('user', [{'OMP_NUM_THREADS': '3'}, {'MXNET_OMP_MAX_THREADS': '5'},
                                  {'DMLC_ROLE': 'worker'}])
def test_user_and_parameter_server_settings_win(user):
    environ = dict(user)
    assert use_all_cores(environ, **NO_SMT) is None
    assert environ == user


def test_horovod_ranks_share_the_host():
    environ = {'HOROVOD_LOCAL_SIZE': '2'}
    assert use_all_cores(environ, **NO_SMT) == 4
    assert environ['MXNET_OMP_MAX_THREADS'] == '4'
    assert use_all_cores({'HOROVOD_LOCAL_SIZE': '8'}, **NO_SMT) is None  # one thread each
    assert use_all_cores({'HOROVOD_LOCAL_SIZE': 'n/a'}, **NO_SMT) == 8  # no crash at import


@pytest.mark.parametrize('environ, expected', [
    ({}, 4), ({'OMP_NUM_THREADS': '3'}, 3), ({'MXNET_OMP_MAX_THREADS': '16'}, 8),
    ({'OMP_NUM_THREADS': '2', 'MXNET_OMP_MAX_THREADS': '6'}, 2),
])
def test_reported_count_follows_mxnet_rules(environ, expected):
    assert mxnet_threads(environ, machine='x86_64', cpus=8) == expected


def test_smt_state_read_from_sysfs_file(tmp_path):
    state = tmp_path / 'active'
    state.write_text('0\n')
    assert smt_active(str(state)) is False
    state.write_text('1\n')
    assert smt_active(str(state)) is True
    assert smt_active(str(tmp_path / 'missing')) is None


COUNT_THREADS = """
import os
import openaff, mxnet as mx
x, w = mx.nd.ones((4, 64, 56, 56)), mx.nd.ones((64, 64, 3, 3))
mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=64, no_bias=True).wait_to_read()
print(len(os.listdir('/proc/self/task')), os.environ.get('MXNET_OMP_MAX_THREADS'))
"""


def _threads_after_a_convolution(**settings):
    environ = {k: v for k, v in os.environ.items()
               if k not in ('OMP_NUM_THREADS', 'MXNET_OMP_MAX_THREADS', 'HOROVOD_LOCAL_SIZE')}
    done = subprocess.run([sys.executable, '-c', COUNT_THREADS], env={**environ, **settings},
                          capture_output=True, text=True, check=True)
    threads, variable = done.stdout.split()
    return int(threads), variable


@pytest.mark.multiprocess
@pytest.mark.skipif(smt_active() is not False or len(os.sched_getaffinity(0)) < 2,
                    reason='needs a Linux machine without SMT and with 2+ processors')
def test_import_gives_mxnet_every_core_and_leaves_children_to_decide():
    default, variable = _threads_after_a_convolution()
    single, _ = _threads_after_a_convolution(MXNET_OMP_MAX_THREADS='1')
    # each processor beyond the first adds one OpenMP worker thread to the process
    assert default - single == len(os.sched_getaffinity(0)) - 1
    assert variable == 'None'  # not inherited by the processes this one starts
