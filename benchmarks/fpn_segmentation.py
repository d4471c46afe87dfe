"""add-FPN against AFF-FPN (and iAFF-FPN) on the digits-on-canvas segmentation task, same data
and seeds: held-out mean IoU at the last epoch (background + ten digits; predicting background
everywhere scores about 0.086).

    python benchmarks/fpn_segmentation.py --merges add AFF --seeds 0 1 --epochs 10
"""
import argparse
import json
import statistics
import time

from openaff.data.canvases import digit_canvases
from openaff.segmentation import fit, segmentation_network


def measure(merge, seed, args):
    train = digit_canvases(args.train, size=args.size, seed=seed, scales=(10, 20))
    val = digit_canvases(args.val, size=args.size, train=False, seed=seed + 1000,
                         scales=(10, 20))
    tic = time.time()
    history = fit(segmentation_network(merge, channel_times=args.channel_times), train, val,
                  epochs=args.epochs, lr=args.lr, seed=seed,
                  report=lambda line: print(f'{merge} seed {seed} {line}', flush=True))
    return {'merge': merge, 'seed': seed, 'miou': history[-1]['val_miou'],
            'seconds': time.time() - tic}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--merges', nargs='+', default=['add', 'AFF'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--train', type=int, default=800, help='training canvases')
    p.add_argument('--val', type=int, default=200, help='held-out canvases')
    p.add_argument('--size', type=int, default=40)
    p.add_argument('--channel-times', type=int, default=2)
    p.add_argument('--lr', type=float, default=0.05)
    p.add_argument('--json', default='runs/fpn_segmentation.json')
    args = p.parse_args()
    rows = [measure(m, s, args) for s in args.seeds for m in args.merges]  # seeds interleaved
    print('\n| merge | held-out mIoU (mean ± sd over seeds) | seconds per run |\n|---|---|---|')
    for merge in args.merges:
        values = [r['miou'] for r in rows if r['merge'] == merge]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        seconds = statistics.mean(r['seconds'] for r in rows if r['merge'] == merge)
        print(f'| {merge} | {statistics.mean(values):.4f} ± {spread:.4f} | {seconds:.0f} |')
    with open(args.json, 'w') as handle:
        json.dump({'settings': vars(args), 'rows': rows}, handle, indent=1)


if __name__ == '__main__':
    main()
