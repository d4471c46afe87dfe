"""openaff-launch with real processes: the DMLC_* environment, a tiny dist_sync job,
failing and killed workers, a signal to the launcher, a hostfile through a fake ssh, usage
errors. The scheduler and the servers really run ``import mxnet``."""
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from openaff import launch
from openaff.cli.launch import main as launch_main

pytestmark = [pytest.mark.multiprocess]

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable
DMLC_KEYS = ['DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER',
             'DMLC_NUM_WORKER', 'DMLC_NODE_HOST', 'PYTHONUNBUFFERED']

# a worker that records its environment in OUT_DIR/<pid>.json
ENV_WORKER = textwrap.dedent(f'''
    import json, os, sys
    record = {{k: os.environ.get(k) for k in {DMLC_KEYS!r}}}
    record['cwd'] = os.getcwd()
    path = os.path.join(sys.argv[1], '%d.json' % os.getpid())
    json.dump(record, open(path + '.tmp', 'w'))
    os.replace(path + '.tmp', path)
''')


def launcher_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + env.get('PYTHONPATH', '').split(os.pathsep))
    for key in list(env):
        if key.startswith('DMLC_'):
            del env[key]
    return env


def run_launcher(args, timeout=60, cwd=None):
    """(exit status, stderr, seconds) of ``openaff-launch ARGS``."""
    start = time.monotonic()
    done = subprocess.run([PY, '-m', 'openaff.cli.launch'] + args, cwd=cwd or REPO,
                          env=launcher_env(), stderr=subprocess.PIPE, text=True,
                          timeout=timeout)
    return done.returncode, done.stderr, time.monotonic() - start


def alive(pid):
    """Running (a zombie counts as gone)."""
    try:
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(')', 1)[1].split()[0] not in ('Z', 'X')


def assert_gone(pids, within=5.0):
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], f'still running: {pids}'


def wait_for(path, within=60.0):
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f'{path} never appeared'
        time.sleep(0.05)


def records(directory):
    return [json.loads(p.read_text()) for p in sorted(directory.glob('*.json'))]


# ---------------------------------------------------------------------------- in-process

@pytest.mark.parametrize('argv, message', [
    (['-n', '2'], 'no worker command'),
    (['-n', '2', '--'], 'no worker command'),
    (['-n', '0', '--', 'true'], 'at least 1'),
    (['-n', '1', '-s', '0', '--', 'true'], 'at least 1'),
    (['-n', '1', '-H', '/no/such/hostfile', '--', 'true'], 'hostfile'),
    (['--', 'true'], 'required'),
])
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        launch_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert 'error:' in err and message in err


def test_hostfile_and_round_robin(tmp_path):
    hostfile = tmp_path / 'hosts'
    hostfile.write_text('# the cluster\nnodeA\n\nnodeB:2  # two slots\nnodeC slots=1\n')
    hosts = launch.read_hostfile(hostfile)
    assert hosts == ['nodeA', 'nodeB', 'nodeB', 'nodeC']
    servers, workers = launch.assign_hosts(hosts, 2, 4)
    assert servers == ['nodeA', 'nodeB']
    assert workers == ['nodeB', 'nodeC', 'nodeA', 'nodeB']
    hostfile.write_text('# nothing\n\n')
    with pytest.raises(ValueError):
        launch.read_hostfile(hostfile)


def test_remote_command_line():
    processes = launch.build_processes(['python', 'train.py', '--tag', 'a b'], 1, 1,
                                       hosts=['nodeA.invalid', 'localhost'],
                                       scheduler_host='10.0.0.1', port=9000, ssh='myssh -p 22')
    scheduler, server, worker = processes
    assert scheduler.local and scheduler.argv() == launch.PS_COMMAND
    assert scheduler.env['DMLC_NODE_HOST'] == '10.0.0.1'
    assert not server.local and worker.local
    argv = server.argv()
    assert argv[:4] == ['myssh', '-p', '22', 'nodeA.invalid']
    assert argv[4].startswith(f'cd {os.getcwd()} && env ')
    assert 'DMLC_ROLE=server' in argv[4] and 'DMLC_PS_ROOT_PORT=9000' in argv[4]
    assert 'DMLC_NODE_HOST=nodeA.invalid' in argv[4]
    assert worker.argv() == ['python', 'train.py', '--tag', 'a b']
    assert worker.env['DMLC_NODE_HOST'] == '10.0.0.1'


# ---------------------------------------------------------------------------- real jobs

def test_workers_get_the_dmlc_environment(tmp_path):
    """Workers that never create a kvstore: the scheduler and the server wait for them
    forever, so the launcher stops them after --grace and still succeeds, silently."""
    rc, err, seconds = run_launcher(['-n', '2', '-s', '1', '--grace', '2', '--',
                                     PY, '-c', ENV_WORKER, str(tmp_path)])
    assert rc == 0, err
    assert 'openaff-launch:' not in err
    found = records(tmp_path)
    assert len(found) == 2
    for record in found:
        assert record['DMLC_ROLE'] == 'worker'
        assert record['DMLC_NUM_WORKER'] == '2' and record['DMLC_NUM_SERVER'] == '1'
        assert record['DMLC_PS_ROOT_URI'] == '127.0.0.1'
        assert record['DMLC_NODE_HOST'] is None
        assert record['PYTHONUNBUFFERED'] == '1'
    ports = {record['DMLC_PS_ROOT_PORT'] for record in found}
    assert len(ports) == 1 and int(ports.pop()) > 0
    assert seconds < 40


DIST_SYNC_WORKER = textwrap.dedent('''
    import json, os, sys
    import mxnet as mx
    kv = mx.kv.create('dist_sync')
    kv.init(3, mx.nd.zeros((2,)))
    kv.push(3, mx.nd.ones((2,)) * (kv.rank + 1))
    out = mx.nd.zeros((2,))
    kv.pull(3, out=out)
    record = {'rank': kv.rank, 'num_workers': kv.num_workers, 'out': out.asnumpy().tolist()}
    json.dump(record, open(os.path.join(sys.argv[1], '%d.json' % kv.rank), 'w'))
''')


def test_dist_sync_job(tmp_path):
    rc, err, seconds = run_launcher(['-n', '2', '-s', '1', '--grace', '20', '--',
                                     PY, '-c', DIST_SYNC_WORKER, str(tmp_path)])
    assert rc == 0, err
    found = records(tmp_path)
    assert sorted(r['rank'] for r in found) == [0, 1]
    for record in found:
        assert record['num_workers'] == 2
        assert record['out'] == [3.0, 3.0]  # 1 + 2: the server sums the pushes
    # the servers and the scheduler exit by themselves: no waiting for the 20 s grace
    assert seconds < 19, seconds


# the first worker to create OUT_DIR/first exits with status 3 once the other one, which
# starts a child (a DataLoader worker, say) and sleeps, has recorded its pids
FAILING_WORKER = textwrap.dedent('''
    import json, os, subprocess, sys, time
    out = sys.argv[1]
    try:
        os.close(os.open(os.path.join(out, 'first'), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        child = subprocess.Popen(['sleep', '600'])
        with open(os.path.join(out, 'sleeper.tmp'), 'w') as f:
            json.dump([os.getpid(), child.pid], f)
        os.replace(os.path.join(out, 'sleeper.tmp'), os.path.join(out, 'sleeper'))
        time.sleep(600)
    else:
        deadline = time.time() + 60
        while not os.path.exists(os.path.join(out, 'sleeper')) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        sys.exit(3)
''')


def test_failing_worker_stops_the_job(tmp_path):
    rc, err, seconds = run_launcher(['-n', '2', '--grace', '2', '--',
                                     PY, '-c', FAILING_WORKER, str(tmp_path)])
    assert rc == 3
    lines = [line for line in err.splitlines() if line.startswith('openaff-launch')]
    assert len(lines) == 1, err
    assert 'error: worker' in lines[0] and 'exited with status 3' in lines[0]
    assert 'stopping the 3 other processes' in lines[0]
    assert seconds < 40
    assert_gone(json.loads((tmp_path / 'sleeper').read_text()))


# a real dist_sync job in which one worker is killed while the other waits on it
KILLED_WORKER = textwrap.dedent('''
    import json, os, signal, sys, time
    import mxnet as mx
    kv = mx.kv.create('dist_sync')
    json.dump(os.getpid(), open(os.path.join(sys.argv[1], 'rank%d' % kv.rank), 'w'))
    if kv.rank == 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    kv.init(3, mx.nd.zeros((2,)))   # waits for rank 1 forever
    kv.push(3, mx.nd.ones((2,)))
    out = mx.nd.zeros((2,))
    kv.pull(3, out=out)
    out.wait_to_read()
    open(os.path.join(sys.argv[1], 'finished'), 'w').close()
''')


def test_killed_worker_stops_a_waiting_job(tmp_path):
    rc, err, seconds = run_launcher(['-n', '2', '--grace', '2', '--',
                                     PY, '-c', KILLED_WORKER, str(tmp_path)])
    assert rc == 1
    lines = [line for line in err.splitlines() if line.startswith('openaff-launch')]
    assert len(lines) == 1, err
    killed = json.loads((tmp_path / 'rank1').read_text())
    assert f'(pid {killed}, localhost) was killed by SIGKILL' in lines[0]
    assert 'error: worker' in lines[0]
    assert not (tmp_path / 'finished').exists()
    assert seconds < 40
    assert_gone([killed, json.loads((tmp_path / 'rank0').read_text())])


SLEEPING_WORKER = textwrap.dedent('''
    import os, sys, time
    open(os.path.join(sys.argv[1], '%d.pid' % os.getpid()), 'w').close()
    time.sleep(600)
''')


def test_sigterm_to_the_launcher_stops_everything(tmp_path):
    start = time.monotonic()
    launcher = subprocess.Popen([PY, '-m', 'openaff.cli.launch', '-n', '2', '--grace', '2', '--',
                                 PY, '-c', SLEEPING_WORKER, str(tmp_path)],
                                cwd=REPO, env=launcher_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob('*.pid'))) < 2:
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 143
    assert 'error: interrupted by SIGTERM; stopping the 4 processes' in err
    assert_gone([int(p.stem) for p in tmp_path.glob('*.pid')])
    assert time.monotonic() - start < 40


def test_hostfile_runs_remote_processes_through_ssh(tmp_path):
    log = tmp_path / 'ssh.log'
    shim = tmp_path / 'fake_ssh'
    # drops ssh's options, records the host and runs the remote command here
    shim.write_text(textwrap.dedent(f'''\
        #!/bin/bash
        while [ $# -gt 0 ]; do
            case "$1" in
                -o) shift 2 ;;
                -*) shift ;;
                *) break ;;
            esac
        done
        echo "$1" >> {shlex.quote(str(log))}
        shift
        exec bash -c "$*"
    '''))
    shim.chmod(0o755)
    hostfile = tmp_path / 'hosts'
    hostfile.write_text('# two fake hosts and this one\n'
                        'nodeA.invalid\nnodeB.invalid\n\nlocalhost\n')
    out = tmp_path / 'out'
    out.mkdir()
    rc, err, _ = run_launcher(['-n', '2', '-s', '1', '-H', str(hostfile), '--grace', '2',
                               '--ssh', f'{shim} -o BatchMode=yes', '--',
                               PY, '-c', ENV_WORKER, str(out)], cwd=tmp_path)
    assert rc == 0, err
    # the server on nodeA, worker 0 on nodeB, worker 1 here
    assert sorted(log.read_text().split()) == ['nodeA.invalid', 'nodeB.invalid']
    found = records(out)
    assert len(found) == 2
    uri = found[0]['DMLC_PS_ROOT_URI']
    assert {r['DMLC_NODE_HOST'] for r in found} == {'nodeB.invalid', uri}
    for record in found:
        assert record['DMLC_ROLE'] == 'worker' and record['DMLC_NUM_WORKER'] == '2'
        assert record['DMLC_PS_ROOT_URI'] == uri
        assert record['cwd'] == str(tmp_path)
