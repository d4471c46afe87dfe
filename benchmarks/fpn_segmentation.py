"""add-FPN against AFF-FPN (and iAFF-FPN) on the digits-on-canvas segmentation task, same data
and seeds, each run by ``train_segmentation.py`` (the shared engine): held-out mean IoU at the
last epoch (background + ten digits; predicting background everywhere scores about 0.086).

    python benchmarks/fpn_segmentation.py --merges add AFF --seeds 0 1 2 --epochs 10
"""
import argparse
import json
import os
import statistics
import time

from openaff.cli import train_segmentation


def measure(merge, seed, args):
    out = os.path.join(args.out, f'{merge}-seed{seed}')
    tic = time.time()
    code = train_segmentation.main(
        ['--merge', merge, '--seed', str(seed), '--num-epochs', str(args.epochs),
         '--canvases', str(args.train), '--val-canvases', str(args.val), '--size',
         str(args.size), '--channel-times', str(args.channel_times), '--lr', str(args.lr),
         '--save-dir', out, '--logging-dir', out, '--save-plot-dir', out, '--overwrite'])
    if code:
        raise SystemExit(f'train_segmentation.py failed for {merge} seed {seed} (exit {code})')
    pointer = next(f for f in os.listdir(out) if f.endswith('-checkpoint.json'))
    with open(os.path.join(out, pointer)) as handle:
        last = json.load(handle)['history'][-1]
    return {'merge': merge, 'seed': seed, 'miou': last['val_miou'],
            'pixel_acc': last['val_pixel_acc'], 'seconds': time.time() - tic}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--merges', nargs='+', default=['add', 'AFF'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--train', type=int, default=800, help='training canvases')
    p.add_argument('--val', type=int, default=200, help='held-out canvases')
    p.add_argument('--size', type=int, default=40)
    p.add_argument('--channel-times', type=int, default=2)
    p.add_argument('--lr', type=float, default=0.05)
    p.add_argument('--out', default='runs/fpn_segmentation')
    args = p.parse_args()
    rows = [measure(m, s, args) for s in args.seeds for m in args.merges]  # seeds interleaved
    print('\n| merge | held-out mIoU (mean ± sd over seeds) | per seed | seconds per run |\n'
          '|---|---|---|---|')
    for merge in args.merges:
        values = [r['miou'] for r in rows if r['merge'] == merge]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        seconds = statistics.mean(r['seconds'] for r in rows if r['merge'] == merge)
        print(f'| {merge} | {statistics.mean(values):.4f} ± {spread:.4f} | '
              f'{", ".join(f"{v:.3f}" for v in values)} | {seconds:.0f} |')
    with open(os.path.join(args.out, 'fpn_segmentation.json'), 'w') as handle:
        json.dump({'settings': vars(args), 'rows': rows}, handle, indent=1)


if __name__ == '__main__':
    main()
