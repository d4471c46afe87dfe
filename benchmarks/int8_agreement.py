"""Top-1 agreement of INT8 and float32 ImageNet networks (AFF/iAFF-ResNet-50 of Dai et al.,
"Attentional Feature Fusion", WACV 2021, and a GluonCV baseline) on scikit-learn's two sample
photos and on random crops of them (docs/int8.md).

    python benchmarks/int8_agreement.py                        # released weights
    python benchmarks/int8_agreement.py --models aff_resnet50 gluoncv:resnet50_v1d --crops 200
    python benchmarks/int8_agreement.py --random-weights       # the harness alone, no weights

Each network is quantized (:func:`openaff.quantize`) on random crops of the photos (another
seed than the crops it is judged on), both photos are fed whole as evaluation feeds a photo
(short side resized, centre crop), and every crop (a random square of 30-100 % of the short
side, resized to the input size). Agreement: how often INT8's top-1 class is float32's, and
how often float32's top-1 is among INT8's top 5.
"""
from __future__ import annotations

import argparse
import sys

import mxnet as mx
import numpy as np


def photos():
    from sklearn.datasets import load_sample_images
    return load_sample_images().images


def random_crops(images, count, size, seed):
    """``count`` random square crops of the photos, resized to ``size``, normalised."""
    from openaff.apps.cam import preprocess
    from openaff.data import dataset_spec
    spec, rng, batches = dataset_spec('imagenet'), np.random.RandomState(seed), []
    for _ in range(count):
        image = images[rng.randint(len(images))]
        side = int(min(image.shape[:2]) * rng.uniform(0.3, 1.0))
        top = rng.randint(image.shape[0] - side + 1)
        left = rng.randint(image.shape[1] - side + 1)
        crop = image[top:top + side, left:left + side]
        batches.append(preprocess(crop, spec.mean, spec.std, size).asnumpy())
    return np.concatenate(batches)


def whole_photos(images, size):
    from openaff.apps.cam import preprocess
    from openaff.data import dataset_spec
    spec = dataset_spec('imagenet')
    return np.concatenate([preprocess(image, spec.mean, spec.std, size).asnumpy()
                           for image in images])


def network(name, random_weights):
    from openaff.apps.benchmark import build
    if random_weights:
        return build(name, 1000, mx.cpu(), 'float32')
    if name.startswith('gluoncv:'):
        from openaff.models import resolve_network
        builder, kwargs = resolve_network(name, pretrained=True)
        return builder(**kwargs)
    from openaff import get_model
    return get_model(name, pretrained=True)


def agreement(net, int8, images):
    ref = net(mx.nd.array(images)).asnumpy()
    out = int8(mx.nd.array(images)).asnumpy()
    top1, top5 = ref.argmax(1), np.argsort(-out, axis=1)[:, :5]
    return float((out.argmax(1) == top1).mean()), float((top5 == top1[:, None]).any(1).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+',
                   default=['gluoncv:resnet50_v1d', 'aff_resnet50', 'iaff_resnet50'])
    p.add_argument('--crops', type=int, default=100, help='random crops judged')
    p.add_argument('--calib', type=int, default=64, help='random crops calibrating')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--random-weights', action='store_true',
                   help='untrained networks: checks the harness, the figures mean nothing')
    args = p.parse_args(argv)
    if min(args.crops, args.calib) < 1 or args.size < 32:
        p.error('--crops and --calib must be at least 1, --size at least 32')
    import openaff
    images = photos()
    calib = random_crops(images, args.calib, args.size, seed=1)
    judged = {'the 2 photos': whole_photos(images, args.size),
              f'{args.crops} random crops': random_crops(images, args.crops, args.size, seed=0)}
    header = [f'top-1 agreement, {k} (float32 top-1 in INT8 top-5)' for k in judged]
    print(f'| network | {" | ".join(header)} |')
    print('|---|' + '---|' * len(judged))
    for name in args.models:
        try:
            net = network(name, args.random_weights)
        except Exception as error:  # noqa: BLE001  no weights (offline), unknown name
            print(f'error: {name}: {str(error).splitlines()[0]}', file=sys.stderr)
            return 1
        int8 = openaff.quantize(net, calib)
        cells = [f'{a:.3f} ({b:.3f})' for a, b in (agreement(net, int8, x)
                                                    for x in judged.values())]
        print(f'| {name} | {" | ".join(cells)} |', flush=True)
    if args.random_weights:
        print('\nrandom weights: these figures check the harness only', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
