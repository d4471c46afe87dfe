"""Every command is installed as a console script, answers --help, and turns bad input into a
one-line error."""
from importlib.metadata import entry_points

import pytest

COMMANDS = sorted(ep.name for ep in entry_points(group='console_scripts')
                  if ep.value.startswith('openaff.'))


def test_every_command_has_a_console_script():
    assert {'openaff-train-cifar', 'openaff-train-imagenet', 'openaff-train-segmentation',
            'openaff-evaluate',
            'openaff-summary', 'openaff-benchmark', 'openaff-compare', 'openaff-plotlog',
            'openaff-launch', 'openaff-ops', 'openaff-export', 'openaff-cam'} <= set(COMMANDS)


@pytest.mark.parametrize('name', COMMANDS)
def test_command_answers_help(name, capsys):
    main = next(ep for ep in entry_points(group='console_scripts') if ep.name == name).load()
    with pytest.raises(SystemExit) as done:
        main(['--help'])
    assert done.value.code == 0
    assert 'usage:' in capsys.readouterr().out


@pytest.mark.multiprocess
def test_every_command_runs_as_python_m():
    """``python -m openaff.cli.NAME --help`` prints the usage (a module without its
    ``__main__`` hook would exit 0 having done nothing)."""
    import subprocess
    import sys
    modules = sorted({ep.value.split(':')[0] for ep in entry_points(group='console_scripts')
                      if ep.name in COMMANDS})
    code = ('import contextlib, io, runpy, sys\n'
            'for module in sys.argv[1:]:\n'
            '    sys.argv, out = [module, "--help"], io.StringIO()\n'
            '    try:\n'
            '        with contextlib.redirect_stdout(out):\n'
            '            runpy.run_module(module, run_name="__main__", alter_sys=True)\n'
            '    except SystemExit as done:\n'
            '        assert done.code == 0, module\n'
            '    print(module, "usage:" in out.getvalue())\n')
    done = subprocess.run([sys.executable, '-c', code, *modules], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = dict(line.split() for line in done.stdout.splitlines())
    assert printed == {module: 'True' for module in modules}
