"""Held-out accuracy of INT8 AFF-ResNet (Dai et al., "Attentional Feature Fusion", WACV 2021)
against float32, on the Quick start's digits job over seeds (docs/int8.md).

    python benchmarks/int8_digits.py                         # seeds 0-4, the full 20 epochs
    python benchmarks/int8_digits.py --seeds 0 --num-epochs 3 --graphs standard fused

For each seed it trains ``python train_cifar.py --dataset digits --seed S`` into a temporary
folder (the README's command), quantizes the final checkpoint with
:func:`openaff.apps.quantize.quantize_checkpoint`, calibrated on training images (read without
augmentation), and scores both networks on the 450 held-out images: accuracy, the change in
points, and how often their top-1 classes agree.
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

import mxnet as mx
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(seed, folder, epochs):
    command = [sys.executable, os.path.join(REPO, 'train_cifar.py'), '--dataset', 'digits',
               '--seed', str(seed), '--save-dir', folder, '--logging-dir', folder,
               '--save-plot-dir', folder]
    if epochs:
        command += ['--num-epochs', str(epochs)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   cwd=REPO)
    final = glob.glob(os.path.join(folder, '*-final.params'))
    return final[0] if final else sorted(glob.glob(os.path.join(folder, '*-epoch*.params')))[-1]


def images_and_labels(loader):
    data, labels = zip(*[(b[0].asnumpy(), b[1].asnumpy()) for b in loader])
    return np.concatenate(data), np.concatenate(labels)


def score(net, images, labels):
    logits = np.concatenate([net(mx.nd.array(images[i:i + 100])).asnumpy()
                             for i in range(0, len(images), 100)])
    return float((logits.argmax(1) == labels).mean()), logits.argmax(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--num-epochs', type=int, default=None, help='default: the job\'s 20')
    p.add_argument('--calib-examples', type=int, default=512, help='training images')
    p.add_argument('--calib-mode', choices=('naive', 'entropy'), default='naive')
    p.add_argument('--graphs', nargs='+', choices=('standard', 'fused'), default=['standard'])
    args = p.parse_args(argv)
    from openaff.apps.evaluate import EvalData, resolve, val_loader
    from openaff.apps.quantize import quantize_checkpoint
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            tic = time.perf_counter()
            path = train(seed, folder, args.num_epochs)
            trained = time.perf_counter() - tic
            train_loader, val = val_loader(EvalData(batch_size=100), resolve(path))
            calib, _ = images_and_labels(train_loader)
            images, labels = images_and_labels(val)
            row = {'seed': seed, 'train_s': trained}
            for graph in args.graphs:
                int8, net = quantize_checkpoint(path, calib, args.calib_mode,
                                                args.calib_examples, graph=graph)
                net.hybridize(static_alloc=True)
                int8.hybridize(static_alloc=True, static_shape=True)
                row['float32'], top_float = score(net, images, labels)
                row[graph], top_int8 = score(int8, images, labels)
                row[graph + ' agree'] = float((top_float == top_int8).mean())
            rows.append(row)
            print(f'seed {seed}: trained in {trained:.0f} s, ' + ', '.join(
                f'{k} {v:.4f}' for k, v in row.items() if k not in ('seed', 'train_s')),
                file=sys.stderr)
    header = '| seed | float32 | ' + ' | '.join(
        f'INT8 {g} | change (points) | top-1 agreement' for g in args.graphs) + ' |'
    print(f'\nINT8 ({args.calib_mode} calibration on {args.calib_examples} training images) '
          f'against float32, digits held-out set (450 images), '
          f'{args.num_epochs or 20} epochs\n')
    print(header)
    print('|' + '---|' * (2 + 3 * len(args.graphs)))
    for row in rows:
        cells = [f'{row["seed"]}', f'{row["float32"]:.4f}']
        for g in args.graphs:
            cells += [f'{row[g]:.4f}', f'{100 * (row[g] - row["float32"]):+.2f}',
                      f'{row[g + " agree"]:.4f}']
        print('| ' + ' | '.join(cells) + ' |')
    for g in args.graphs:
        changes = [100 * (r[g] - r['float32']) for r in rows]
        print(f'\n{g}: mean change {statistics.mean(changes):+.2f} points, largest drop '
              f'{min(changes):+.2f}; goal: within 0.5 points')
    return 0


if __name__ == '__main__':
    sys.exit(main())
