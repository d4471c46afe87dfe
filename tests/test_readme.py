"""The README's Quick start is what CI runs, and its Python snippets run."""
import re

import pytest
from conftest import REPO


def quick_start_commands():
    text = (REPO / 'README.md').read_text()
    section = text.split('## Quick start', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.+?)\n```', section)


def test_ci_runs_the_readme_test_command():
    commands = quick_start_commands()
    test_command = next(c for c in commands if 'pytest' in c)
    ci_lines = (REPO / '.ci' / 'run').read_text().splitlines()
    assert test_command in ci_lines


@pytest.mark.slow
def test_the_quick_start_job_runs(tmp_path, monkeypatch):
    """The main job's command, as the README writes it, for one epoch into a scratch folder."""
    import shlex

    from openaff.cli import train_cifar as cifar
    job = next(c for c in quick_start_commands() if 'train_cifar.py' in c)
    argv = shlex.split(job.split('&&')[-1])
    assert argv[:2] == ['python', 'train_cifar.py']
    monkeypatch.chdir(tmp_path)
    assert cifar.main(argv[2:] + ['--num-epochs', '1', '--seed', '0']) == 0
    assert list((tmp_path / 'runs' / 'digits').glob('*-best.params'))


def test_fusion_snippet_runs():
    import mxnet as mx
    text = (REPO / 'README.md').read_text()
    snippet = text.split('## Using a fusion block in your own network', 1)[1]
    code = re.search(r'```python\n(.+?)\n```', snippet, re.S).group(1)
    scope = {}
    exec(code, scope)  # noqa: S102 (our own README)
    block = scope['MyBlock'](8)
    block.initialize()
    assert block(mx.nd.ones((1, 8, 5, 5))).shape == (1, 8, 5, 5)
