"""The README's Quick start is what CI runs, and its Python snippets run."""
import re

from conftest import REPO


def quick_start_commands():
    text = (REPO / 'README.md').read_text()
    section = text.split('## Quick start', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.+?)\n```', section)


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert len(commands) == 2 and 'pytest' in commands[1]
    ci_lines = (REPO / '.ci' / 'run').read_text().splitlines()
    assert commands[1] in ci_lines


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
