"""The main job over seeds: ``python train_cifar.py --dataset digits`` with its defaults, once
per seed, then the held-out accuracy of the last epoch (inference mode, BatchNorm on the running
statistics), the best epoch and the training time of each run, with their mean and spread.

    python benchmarks/digits_seeds.py                       # seeds 0-4
    python benchmarks/digits_seeds.py --seeds 0 1 2 -- --askc-type ResGlobLocaforGlobLocaCha

Options after ``--`` are passed to every run. Finished runs are reused (``--fresh`` retrains).
"""
import argparse
import json
import statistics
import sys

from openaff.apps.compare import finished_record
from openaff.cli import train_cifar
from openaff.engine.checkpoint import score_name


def run_seed(seed, out, extra, fresh):
    run_dir = f'{out}/seed{seed}'
    argv = ['--dataset', 'digits', '--seed', str(seed), '--save-dir', run_dir, '--logging-dir',
            run_dir, '--save-plot-dir', run_dir, *extra]
    epochs = train_cifar.parse_options(argv).num_epochs
    record = None if fresh else finished_record(run_dir, epochs)
    if record is None:
        if train_cifar.main([*argv, '--overwrite']) != 0:  # retrain what is not finished
            raise SystemExit(f'error: the run with seed {seed} failed')
        record = finished_record(run_dir, epochs)
    history, score = record['history'], score_name(record)
    return {'seed': seed, 'last': history[-1][score],
            'best': max(r[score] for r in history),
            'train_minutes': sum(r['time'] for r in history) / 60,
            'command': 'python train_cifar.py ' + ' '.join(argv)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index('--') + 1:] if '--' in argv else []
    own = argv[:argv.index('--')] if '--' in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--out', default='runs/digits-seeds')
    parser.add_argument('--fresh', action='store_true', help='retrain finished runs')
    opt = parser.parse_args(own)
    rows = [run_seed(seed, opt.out, extra, opt.fresh) for seed in opt.seeds]
    print('| seed | last epoch | best epoch | training minutes |\n|---|---|---|---|')
    for row in rows:
        print(f"| {row['seed']} | {row['last']:.4f} | {row['best']:.4f} "
              f"| {row['train_minutes']:.1f} |")
    last = [row['last'] for row in rows]
    spread = statistics.stdev(last) if len(last) > 1 else 0.0
    print(f'last epoch: mean {statistics.mean(last):.4f} ± {spread:.4f}, min {min(last):.4f} '
          f'over {len(last)} seeds')
    with open(f'{opt.out}/summary.json', 'w') as handle:
        json.dump(rows, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
