"""The benchmark harness runs end to end and reports ratios, JSON and a PNG (speed itself is
measured by the harness, never asserted here)."""
import json

from openaff.benchmark import main


def test_harness_writes_table_json_and_png(tmp_path, capsys):
    code = main(['--set', 'cifar', '--models', 'gluoncv:cifar_resnet20_v2', 'cifar_aff_resnet32',
                 '--batch-size', '2', '--repeats', '1', '--warmup', '0', '--out', str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert 'infer x' in out and 'cifar_aff_resnet32' in out
    report = json.loads(next(tmp_path.glob('*.json')).read_text())
    assert report['baseline'] == 'gluoncv:cifar_resnet20_v2'
    names = [r['model'] for r in report['results']]
    assert names == ['gluoncv:cifar_resnet20_v2', 'cifar_aff_resnet32']
    assert all(r['infer_ips'] > 0 and r['train_ips'] > 0 and r['gflops'] > 0
               for r in report['results'])
    assert next(tmp_path.glob('*.png')).stat().st_size > 1000
