"""The benchmark harness runs end to end and reports ratios, JSON and a PNG (speed itself is
measured by the harness, never asserted here)."""
import json

import pytest

from openaff.apps.benchmark import balanced_ratio, paired_times
from openaff.cli.benchmark import main


@pytest.mark.slow
def test_harness_writes_table_json_and_png(tmp_path, capsys):
    code = main(['--set', 'cifar', '--models', 'gluoncv:cifar_resnet20_v2', 'cifar_aff_resnet32',
                 'cifar_aff_resnet32@reference', '--batch-size', '2', '--repeats', '2',
                 '--warmup', '0', '--out', str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert 'infer x' in out and 'cifar_aff_resnet32' in out
    report = json.loads(next(tmp_path.glob('*.json')).read_text())
    assert report['baseline'] == 'gluoncv:cifar_resnet20_v2'
    names = [r['model'] for r in report['results']]
    assert names == ['gluoncv:cifar_resnet20_v2', 'cifar_aff_resnet32',
                     'cifar_aff_resnet32@reference']
    assert all(r['infer_ips'] > 0 and r['train_ips'] > 0 and r['gflops'] > 0
               and r['infer_ratio'] > 0 and r['train_ratio'] > 0 and r['memory_mb'] > 100
               for r in report['results'])
    # the same network under two fusion algebras: same counts
    assert report['results'][1]['gflops'] == report['results'][2]['gflops']
    assert next(tmp_path.glob('*.png')).stat().st_size > 1000


def test_rounds_alternate_order_so_a_second_position_bias_cancels(monkeypatch):
    """Two identical steps where whichever runs second in a round is faster (as on this
    machine): a fixed order would report the second one as 2x faster. A simulated clock, so
    that the load of the machine cannot move the result."""
    from openaff.apps.benchmark import timing
    clock = [0.0]
    calls = []
    monkeypatch.setattr(timing.time, 'perf_counter', lambda: clock[0])

    def step(name):
        def run():
            second = len(calls) % 2 == 1
            calls.append(name)
            clock[0] += 0.002 if second else 0.004
        return run

    rounds = paired_times([step('base'), step('other')], rounds=4, warmup=0)
    assert calls == ['base', 'other', 'other', 'base'] * 2
    assert [len(r) for r in rounds] == [2] * 4
    assert rounds[0][0] > rounds[0][1] and rounds[1][0] < rounds[1][1]  # times in step order
    assert balanced_ratio(rounds) == pytest.approx(1.0)
    fixed_order = [[r[0], r[1]] if i % 2 == 0 else [r[1], r[0]] for i, r in enumerate(rounds)]
    assert balanced_ratio(fixed_order) == pytest.approx(2.0)
    assert balanced_ratio([[2.0, 1.0], [1.0, 1.0], [3.0, 1.0], [1.0, 1.0]]) == pytest.approx(1.75)


def test_bad_names_are_one_line_errors(tmp_path, capsys):
    assert main(['--models', 'no_such_net', '--no-memory', '--out', str(tmp_path)]) == 2
    assert 'unknown model' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--repeats', '0', '--out', str(tmp_path)])
    assert 'must be at least 1' in capsys.readouterr().err
    assert main(['--models', 'aff_resnet50@slow', '--out', str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith('error: unknown fusion implementation')
    for entry, message in (('cifar_aff_resnet20/NoSuchFuse', 'unknown fusion'),
                           ('gluoncv:cifar_resnet20_v2/AFF', 'GluonCV networks have none')):
        assert main(['--set', 'cifar', '--models', entry, '--out', str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count('\n') == 1, err


def test_fusion_rows_are_timed_against_their_own_backbone_with_plain_addition(tmp_path):
    """The ``x add`` ratios: AFF against the same network with ``DirectAdd``, a twin built
    once for the AFF and iAFF rows of one architecture; rows without a fusion have none."""
    import math

    from openaff.apps.benchmark import Settings, measure_all, plain_addition_twin
    assert plain_addition_twin('cifar_aff_resnet20@reference') == 'cifar_aff_resnet20/DirectAdd'
    assert plain_addition_twin('cifar_aff_resnet20/iAFF') == 'cifar_aff_resnet20/DirectAdd'
    assert plain_addition_twin('cifar_aff_resnet20/DirectAdd') is None
    assert plain_addition_twin('gluoncv:cifar_resnet20_v2') is None
    settings = Settings('cifar', batch_size=2, repeats=2, warmup=0, memory=False)
    rows = measure_all(['gluoncv:cifar_resnet20_v2', 'cifar_aff_resnet20',
                        'cifar_aff_resnet20/iAFF', 'cifar_aff_resnet20/DirectAdd'],
                       'gluoncv:cifar_resnet20_v2', settings)
    base, aff, iaff, plain = rows
    assert math.isnan(base.add_infer_ratio) and math.isnan(plain.add_train_ratio)
    assert all(r.add_infer_ratio > 0 and r.add_train_ratio > 0 for r in (aff, iaff))
    assert iaff.params_m > aff.params_m > plain.params_m


@pytest.mark.multiprocess
def test_memory_probe_reports_its_own_process_not_the_parent():
    """Linux's ru_maxrss starts a fork+exec'd child at the parent's size: with the harness
    holding several networks, every probe would report at least the harness's memory."""
    import subprocess
    import sys

    import numpy as np
    parent_mb = 1500
    ballast = np.ones(parent_mb * 2 ** 20 // 8)  # resident: written by np.ones
    done = subprocess.run(
        [sys.executable, '-c', 'import numpy as np, openaff.apps.benchmark as b\n'
         'block = np.ones(50 * 2 ** 20 // 8)\nprint(b.peak_rss_mb())'],
        capture_output=True, text=True, check=True)
    child_mb = float(done.stdout.split()[-1])
    assert ballast[-1] == 1
    assert 50 < child_mb < parent_mb / 2


def test_every_input_is_in_the_network_dtype():
    """float64 stands for float16, which this CPU cannot run: every input, the FLOP count's
    included, in the network's dtype."""
    from openaff.apps.benchmark import Candidate, Settings
    row = Candidate('cifar_aff_resnet20', Settings(set='cifar', dtype='float64', batch_size=2,
                                                   train=False, memory=False))
    assert row.gflops > 0
    row.infer()


def test_float16_on_the_cpu_is_a_one_line_error_before_any_work(tmp_path, capsys):
    from openaff.cli.benchmark import _cpu_runs_float16, main
    if _cpu_runs_float16():
        pytest.skip("this MXNet's CPU kernels run float16 convolutions")
    assert main(['--set', 'cifar', '--models', 'cifar_aff_resnet20', '--dtype', 'float16',
                 '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --dtype float16') and err.count('\n') == 1, err
    assert not list(tmp_path.iterdir())


def test_int8_and_onnxruntime_rows_beside_float32(tmp_path, capsys):
    """``--dtype int8 --runtime onnxruntime``: every row also in INT8, in onnxruntime float32
    and INT8, each timed against the baseline run the same way and against its own float32
    row (``x own f32``); float rows have no such ratio, only float rows train."""
    import math
    code = main(['--set', 'cifar', '--models', 'gluoncv:cifar_resnet20_v1', 'cifar_aff_resnet20',
                 '--dtype', 'int8', '--runtime', 'onnxruntime', '--batch-size', '2',
                 '--repeats', '2', '--warmup', '0', '--no-memory', '--out', str(tmp_path)])
    assert code == 0
    assert 'x own f32' in capsys.readouterr().out
    report = json.loads(next(tmp_path.glob('*.json')).read_text())
    rows = {r['model']: r for r in report['results']}
    runtimes = ['', '#int8', '#onnxruntime', '#onnxruntime-int8']
    assert list(rows) == [name + runtime for name in ('gluoncv:cifar_resnet20_v1',
                                                      'cifar_aff_resnet20')
                          for runtime in runtimes]
    for name, row in rows.items():
        assert row['infer_ips'] > 0 and row['latency_ms'] > 0
        assert ('#' in name) == (row['own_infer_ratio'] > 0)
        assert ('#' in name) == math.isnan(row['train_ratio'])
    assert rows['cifar_aff_resnet20#int8']['add_infer_ratio'] > 0  # against the INT8 twin
    assert report['machine']['cpu_int8_instructions'] != ''


@pytest.mark.parametrize('args,message', [
    (['--models', 'cifar_aff_resnet20#int9'], 'unknown runtime'),
    (['--models', 'gluoncv:resnet50_v1_int8#int8'], 'already an INT8'),
    (['--dtype', 'int8', '--ctx', 'gpu'], 'run on the CPU'),
    (['--runtime', 'onnxruntime', '--ctx', 'gpu'], 'run on the CPU'),
])
def test_int8_requests_that_cannot_run_are_one_line_errors(args, message, tmp_path, capsys):
    assert main(['--set', 'cifar', '--no-memory', '--out', str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1, err
    assert not list(tmp_path.iterdir())
