"""Train/inference BatchNorm gap of the CIFAR AFF networks on the embedded digits data.

For each fusion, trains with the README's digits command, then measures held-out accuracy
with BatchNorm on (a) the running statistics kept during training (inference mode, what the
log reports), (b) each validation batch's own statistics (training mode), and (c) precise-BN
population statistics re-estimated over N training batches. Prints a table and writes JSON.

    python benchmarks/bn_statistics.py --epochs 20 --out runs/bn
"""
import argparse
import json
import os

import mxnet as mx
from mxnet import autograd

from openaff import evaluate as evaluation
from openaff.batchnorm import precise_bn
from openaff.cli import train_cifar
from openaff.engine import evaluate

FUSIONS = ('DirectAdd', 'ASKCFuse', 'ResGlobLocaforGlobLocaCha')


def command(fusion, epochs, out, seed, extra):
    return ['--dataset', 'digits', '--model', 'resnet', '--askc-type', fusion, '--blocks', '1',
            '--channel-times', '1', '--num-epochs', str(epochs), '--save-dir', out,
            '--logging-dir', out, '--save-plot-dir', out, '-j', '0', '--seed', str(seed),
            '--overwrite', *extra]


def batch_statistics_accuracy(net, loader):
    with autograd.train_mode():  # BatchNorm normalises each batch with its own statistics
        return evaluate(net, loader, [mx.cpu()])['val_acc']


def measure(fusion, args):
    out = os.path.join(args.out, fusion)
    argv = command(fusion, args.epochs, out, args.seed, args.extra)
    if train_cifar.main(argv) != 0:
        raise SystemExit(f'training {fusion} failed')
    final = next(os.path.join(out, f) for f in os.listdir(out) if f.endswith('-final.params'))
    target = evaluation.resolve(final)
    net = evaluation.build(target, mx.cpu())
    train, val = evaluation.val_loader(evaluation.EvalData(), target)
    running = evaluate(net, val, [mx.cpu()])['val_acc']
    batch = batch_statistics_accuracy(net, val)
    precise_bn(net, train, num_batches=args.precise_bn)
    precise = evaluate(net, val, [mx.cpu()])['val_acc']
    return {'fusion': fusion, 'running': running, 'batch': batch, 'precise': precise,
            'gap_running': batch - running, 'gap_precise': batch - precise,
            'command': 'python train_cifar.py ' + ' '.join(argv)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--precise-bn', type=int, default=10, help='training batches for precise BN')
    p.add_argument('--fusions', nargs='+', default=list(FUSIONS))
    p.add_argument('--out', default='runs/bn_statistics')
    p.add_argument('--extra', nargs=argparse.REMAINDER, default=[],
                   help='more train_cifar.py options, e.g. --extra --bn-branch-momentum 0.5')
    args = p.parse_args()
    rows = [measure(f, args) for f in args.fusions]
    print('\n| fusion | BN running stats | BN batch stats | precise BN | gap (batch - precise) |')
    print('|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['fusion']} | {r['running']:.4f} | {r['batch']:.4f} | {r['precise']:.4f} | "
              f"{r['gap_precise']:+.4f} |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'bn_statistics.json'), 'w') as handle:
        json.dump(rows, handle, indent=1)


if __name__ == '__main__':
    main()
