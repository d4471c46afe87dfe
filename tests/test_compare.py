"""The comparison tool trains the set with one recipe and writes one table, JSON and figure."""
import json

import pytest

from openaff.cli.compare import main

pytestmark = [pytest.mark.slow]


def test_compare_two_models_two_seeds(tmp_path, capsys):
    code = main(['--models', 'DirectAdd-ResNet-20', 'cifar_resnet20_v2', '--epochs', '1',
                 '--seeds', '0', '1', '--speed-batch', '4', '--repeats', '1',
                 '--out', str(tmp_path), '--recipe', '--batch-size', '256'])
    assert code == 0
    table = capsys.readouterr().out
    assert '| DirectAdd-ResNet-20 |' in table and '| cifar_resnet20_v2 |' in table
    report = json.loads((tmp_path / 'compare-digits.json').read_text())
    rows = {r['model']: r for r in report['rows']}
    # same depth and width: the port's DirectAdd ResNet-20 has GluonCV's parameter count
    assert abs(rows['DirectAdd-ResNet-20']['params_m']
               - rows['cifar_resnet20_v2']['params_m']) < 1e-3
    assert all(len(r['runs']) == 2 and r['train_ips'] > 0 for r in rows.values())
    assert '--seed 1' in rows['cifar_resnet20_v2']['runs'][1]['command']
    assert (tmp_path / 'compare-digits.png').stat().st_size > 1000
    markdown = (tmp_path / 'compare-digits.md').read_text()
    assert 'Machine:' in markdown
    assert 'inference mode; BatchNorm statistics: running statistics' in markdown
    # collecting finished runs again trains nothing and gives the same accuracies
    assert main(['--models', 'cifar_resnet20_v2', '--epochs', '1', '--seeds', '0', '1',
                 '--speed-batch', '4', '--repeats', '1', '--out', str(tmp_path), '--reuse',
                 '--recipe', '--batch-size', '256']) == 0
    again = json.loads((tmp_path / 'compare-digits.json').read_text())['rows'][0]
    assert again['acc_mean'] == rows['cifar_resnet20_v2']['acc_mean']


def test_unknown_model_is_refused(capsys):
    assert main(['--models', 'VGG']) == 2
    assert 'valid:' in capsys.readouterr().err
