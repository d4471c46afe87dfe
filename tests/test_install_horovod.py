"""tools/install_horovod.sh's choice of Horovod's GPU operations (``--print-config``: the
decision without a build). The choice follows the installed mxnet: a CPU build gets CPU (Gloo)
operations even where nvcc exists, a CUDA build gets NCCL when the CUDA toolkit and NCCL's
development files are here. CUDA builds of mxnet are stood in for by a fake ``mxnet`` package,
the toolkit by a fake ``nvcc``, NCCL by a folder with its header and library names; the real
GPU build itself cannot be run on a machine without a CUDA build of mxnet."""
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'tools' / 'install_horovod.sh'
SYSTEM_NCCL = any(pathlib.Path(p).exists() for p in ('/usr/include/nccl.h',
                                                     '/usr/local/include/nccl.h'))


def run_script(env, *args):
    result = subprocess.run(['bash', str(SCRIPT), '--print-config', *args], env=env,
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    config = dict(line.split('=', 1) for line in result.stdout.splitlines() if '=' in line)
    return result, config


@pytest.fixture
def fake(tmp_path):
    """An environment whose ``python`` sees a fake mxnet (CUDA or not, optionally a
    ``mxnet-cuXYZ`` wheel), with a fake CUDA toolkit and NCCL to opt into."""
    bin_dir, site = tmp_path / 'bin', tmp_path / 'site'
    bin_dir.mkdir()
    (bin_dir / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / 'python').chmod(0o755)
    env = {'PATH': f'{bin_dir}:/usr/bin:/bin', 'HOME': str(tmp_path), 'PYTHONPATH': str(site),
           'OPENAFF_WHEEL_CACHE': str(tmp_path / 'wheels'), 'CUDA_HOME': str(tmp_path / 'none')}

    def make(cuda, wheel=None, nvcc=None, nccl=None):
        package = site / 'mxnet'
        package.mkdir(parents=True, exist_ok=True)
        (package / '__init__.py').write_text("__version__ = '1.9.1'\n")
        (package / 'runtime.py').write_text(textwrap.dedent(f'''
            class Features:
                def is_enabled(self, name):
                    return name == 'CUDA' and {bool(cuda)!r}
            '''))
        if wheel:  # the distribution a pip install of mxnet-cuXYZ leaves
            info = site / f'{wheel.replace("-", "_")}-1.9.1.dist-info'
            info.mkdir(exist_ok=True)
            (info / 'METADATA').write_text(
                f'Metadata-Version: 2.1\nName: {wheel}\nVersion: 1.9.1\n')
        if nvcc:
            toolkit = tmp_path / 'cuda'
            (toolkit / 'bin').mkdir(parents=True, exist_ok=True)
            (toolkit / 'bin' / 'nvcc').write_text(
                f'#!/bin/sh\necho "Cuda compilation tools, release {nvcc}, V{nvcc}.0"\n')
            (toolkit / 'bin' / 'nvcc').chmod(0o755)
            env['CUDA_HOME'] = str(toolkit)
        if nccl:
            home = tmp_path / 'nccl'
            (home / 'include').mkdir(parents=True, exist_ok=True)
            (home / 'lib').mkdir(exist_ok=True)
            (home / 'include' / 'nccl.h').write_text('#define NCCL_MAJOR 2\n')
            for name in nccl:
                (home / 'lib' / name).write_text('')
            env['HOROVOD_NCCL_HOME'] = str(home)
        return dict(env)
    return make


@pytest.mark.multiprocess
def test_the_installed_cpu_mxnet_gets_cpu_operations_even_beside_nvcc(tmp_path):
    """This machine: the CPU build of mxnet (and, here, nvcc for CUDA 13 on the PATH)."""
    env = dict(os.environ, OPENAFF_WHEEL_CACHE=str(tmp_path))
    env.pop('HOROVOD_GPU_OPERATIONS', None)
    result, config = run_script(env)
    assert result.returncode == 0, result.stderr
    assert config['variant'] == 'cpu' and 'HOROVOD_GPU_OPERATIONS' not in config
    assert config['wheel_dir'].endswith('-cpu') and 'mxnet1.9.1-py' in config['wheel_dir']
    assert 'mxnet is a CPU build' in result.stderr


def test_cpu_mxnet_ignores_a_toolkit_and_nccl(fake):
    result, config = run_script(fake(cuda=False, nvcc='11.2', nccl=['libnccl.so']))
    assert result.returncode == 0, result.stderr
    assert config['variant'] == 'cpu' and 'HOROVOD_GPU_OPERATIONS' not in config
    assert config['HOROVOD_WITHOUT_MPI'] == '1' and config['HOROVOD_WITH_GLOO'] == '1'


def test_cuda_mxnet_with_toolkit_and_nccl_gets_nccl_operations(fake, tmp_path):
    result, config = run_script(fake(cuda=True, wheel='mxnet-cu112', nvcc='11.2',
                                     nccl=['libnccl.so', 'libnccl.so.2']))
    assert result.returncode == 0, result.stderr
    assert config['variant'] == 'nccl' and config['HOROVOD_GPU_OPERATIONS'] == 'NCCL'
    assert config['HOROVOD_NCCL_INCLUDE'] == str(tmp_path / 'nccl' / 'include')
    assert config['HOROVOD_NCCL_LIB'] == str(tmp_path / 'nccl' / 'lib')
    assert config['HOROVOD_NCCL_LINK'] == 'SHARED'
    assert config['HOROVOD_CUDA_HOME'] == str(tmp_path / 'cuda')
    assert config['wheel_dir'] == str(tmp_path / 'wheels' / f'mxnet1.9.1-py'
                                      f'{sys.version_info[0]}{sys.version_info[1]}-nccl')
    assert 'warning' not in result.stderr


def test_static_nccl_is_linked_statically(fake):
    _, config = run_script(fake(cuda=True, nvcc='11.2', nccl=['libnccl_static.a']))
    assert config['variant'] == 'nccl' and config['HOROVOD_NCCL_LINK'] == 'STATIC'


@pytest.mark.skipif(SYSTEM_NCCL, reason='this machine has NCCL installed system-wide')
def test_cuda_mxnet_without_nccl_builds_cuda_operations_and_says_why(fake):
    # a runtime-only NCCL (libnccl.so.2, as pip's nvidia-nccl ships) cannot be linked against
    result, config = run_script(fake(cuda=True, nvcc='11.2', nccl=['libnccl.so.2']))
    assert result.returncode == 0, result.stderr
    assert config['variant'] == 'cuda' and 'HOROVOD_GPU_OPERATIONS' not in config
    assert config['wheel_dir'].endswith('-cuda')
    assert 'no NCCL development files' in result.stderr


def test_cuda_mxnet_without_a_toolkit_is_an_error(fake):
    result, _ = run_script(fake(cuda=True))
    assert result.returncode == 1
    assert 'no nvcc found' in result.stderr


def test_a_toolkit_of_another_cuda_major_is_warned_about(fake):
    result, config = run_script(fake(cuda=True, wheel='mxnet-cu112', nvcc='13.0',
                                     nccl=['libnccl.so']))
    assert result.returncode == 0 and config['variant'] == 'nccl'
    assert 'built for CUDA 11.2' in result.stderr and 'CUDA 13.0' in result.stderr


def test_an_explicit_choice_wins_and_keys_the_cache(fake):
    env = fake(cuda=True, nvcc='11.2', nccl=['libnccl.so'])
    _, config = run_script(dict(env, HOROVOD_GPU_OPERATIONS=''))
    assert config['variant'] == 'cpu' and 'HOROVOD_GPU_OPERATIONS' not in config
    _, config = run_script(dict(env, HOROVOD_GPU_OPERATIONS='MPI'))
    assert config['variant'] == 'mpi' and config['HOROVOD_GPU_OPERATIONS'] == 'MPI'
    assert config['HOROVOD_WITH_MPI'] == '1' and 'HOROVOD_WITHOUT_MPI' not in config
    assert config['wheel_dir'].endswith('-mpi')


def test_gpu_operations_asked_of_a_cpu_mxnet_or_unknown_ones_are_refused(fake):
    result, _ = run_script(dict(fake(cuda=False), HOROVOD_GPU_OPERATIONS='NCCL'))
    assert result.returncode == 1
    assert 'needs a CUDA build of mxnet' in result.stderr
    result, _ = run_script(dict(fake(cuda=True), HOROVOD_GPU_OPERATIONS='nccl'))
    assert result.returncode == 1 and 'NCCL, MPI or nothing' in result.stderr


FAKE_PIP = textwrap.dedent('''\
    #!/bin/sh
    echo "$* | $(env | grep ^HOROVOD_ | sort | tr '\\n' ' ')" >> "$PIP_LOG"
    if [ "$1" = wheel ]; then
        while [ $# -gt 0 ]; do
            if [ "$1" = -w ]; then mkdir -p "$2"; touch "$2/horovod-0.28.1-cp3-none-any.whl"; fi
            shift
        done
    fi
    ''')


@pytest.mark.parametrize('cuda', [False, True], ids=['cpu', 'nccl'])
def test_the_build_gets_the_chosen_variables_and_the_wheel_is_cached(fake, tmp_path, cuda):
    """The build itself, with pip stood in for: the wheel is built once per choice with exactly
    the chosen variables, and a second run installs the cached wheel without building."""
    env = fake(cuda=cuda, nvcc='11.2', nccl=['libnccl.so'])
    pip = pathlib.Path(env['PATH'].split(':')[0]) / 'pip'
    pip.write_text(FAKE_PIP)
    pip.chmod(0o755)
    env['PIP_LOG'] = str(tmp_path / 'pip.log')
    for _ in range(2):
        # horovod.mxnet cannot import against the fake mxnet: the script ends saying so
        result = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True,
                                timeout=120, cwd=REPO)
        assert result.returncode == 1 and 'does not import' in result.stderr, result.stderr
    calls = (tmp_path / 'pip.log').read_text().splitlines()
    builds = [c for c in calls if c.startswith('wheel ')]
    assert len(builds) == 1
    args, variables = builds[0].split(' | ')
    variant = 'nccl' if cuda else 'cpu'
    assert args.startswith('wheel --no-deps --no-build-isolation -w ')
    assert args.split()[4].endswith(f'-{variant}') and args.endswith('horovod==0.28.1')
    assert 'HOROVOD_WITH_MXNET=1' in variables and 'HOROVOD_WITHOUT_MPI=1' in variables
    assert ('HOROVOD_GPU_OPERATIONS=NCCL' in variables) == cuda
    installs = [c for c in calls if c.startswith('install ') and '.whl' in c]
    assert len(installs) == 2 and all(f'-{variant}/horovod-0.28.1' in c for c in installs)


def test_the_script_is_valid_bash():
    assert shutil.which('bash')
    assert subprocess.run(['bash', '-n', str(SCRIPT)]).returncode == 0
