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
