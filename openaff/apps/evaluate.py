"""Evaluating a checkpoint: top-1/top-5 accuracy and loss on CIFAR, digits or ImageNet validation
data, beside the published value (zoo names, released files) or the value the training run
logged (checkpoints of ``train_cifar.py`` / ``train_imagenet.py``).

    openaff-evaluate cifar_aff_resnet32 --data-dir ~/data/cifar
    openaff-evaluate runs/0.9622-digits-ASKCFuse-resnet-8-c-1-s-1-best.params
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import mxnet as mx

__all__ = ['Target', 'EvalData', 'resolve', 'build', 'val_loader', 'check_dtype',
           'evaluate_checkpoint', 'report']


@dataclass
class Target:
    """What to evaluate: how to build the net, where the weights are, what to compare with."""
    net_class: str
    kwargs: dict
    params: str | bool        # a path, or True for the released file of ``zoo_name``
    dataset: str
    labels: str = 'fine'
    input_size: int = 32
    zoo_name: str | None = None
    reference: str = ''       # published or logged value, in words
    reference_acc: float | None = None


def _from_zoo(name, params=True):
    from ..models import builder_name
    from ..zoo import model_info
    info = model_info(name)
    reference_acc = None
    if info.release:
        value = info.release.value
        reference_acc = value if info.release.metric == 'top1_acc' else 1 - value
    return Target(builder_name(info.builder), dict(info.args), params, info.dataset, info.labels,
                  info.input_size, name, f'published: {info.published}', reference_acc)


def _release_named(path):
    from ..zoo import MODELS
    base = os.path.basename(path)
    return next((n for n, i in MODELS.items() if i.release and
                 os.path.basename(i.release.path) == base), None)


def _training_record(path):
    """The checkpoint JSON written beside ``path`` by the training scripts, if any."""
    directory = os.path.dirname(os.path.abspath(path))
    for pointer in sorted(glob.glob(os.path.join(directory, '*-checkpoint.json'))):
        with open(pointer) as handle:
            record = json.load(handle)
        if record.get('model') and record['model'] in os.path.basename(path) and 'net' in record:
            return record
    return None


def _logged_accuracy(record, path):
    """The validation accuracy the run logged for these weights."""
    from ..engine.checkpoint import score_name
    history, score = record.get('history', []), score_name(record)
    base = os.path.basename(path)
    if base.endswith('-best.params'):
        best = max(history, key=lambda r: r[score])
        return best[score]
    if '-epoch' in base:
        epoch = int(base.rsplit('-epoch', 1)[1].split('.')[0])
        return next(r[score] for r in history if r['epoch'] == epoch)
    return history[-1][score] if history else None


def resolve(name_or_path):
    """A zoo name, a released file, or a training checkpoint -> :class:`Target`."""
    if not os.path.exists(os.path.expanduser(name_or_path)):
        if os.sep in name_or_path or name_or_path.endswith(('.params', '.json')):
            raise FileNotFoundError(f'no such file: {name_or_path}')
        return _from_zoo(name_or_path)
    path = os.path.expanduser(name_or_path)
    zoo_name = _release_named(path)
    if zoo_name:
        return _from_zoo(zoo_name, params=path)
    record = _training_record(path)
    if record is None:
        raise ValueError(f'cannot tell the architecture of {path}: give a zoo name, a released '
                         f'file, or keep the training run\'s *-checkpoint.json beside it')
    from ..models.registry import network_task, record_name
    net_class = record_name(record['net'])
    task = network_task(net_class)
    if task != 'classification':
        raise ValueError(f'{path} is a {record.get("dataset", "non-classification")} '
                         f'{task} run: this command scores classifiers (the run\'s '
                         f'checkpoint record holds its held-out scores per epoch)')
    accuracy = _logged_accuracy(record, path)
    return Target(net_class, record['net']['kwargs'], path, record['dataset'],
                  record.get('labels', 'fine'), record.get('input_size', 32),
                  reference=f'logged by training: val={accuracy:.6f} '
                            f'(BN: {record.get("bn_statistics", "running statistics")})',
                  reference_acc=accuracy)


def build(target, ctx):
    from ..models import resolve_network
    from ..store import load_checkpoint
    from ..zoo import get_model
    if target.zoo_name:
        return get_model(target.zoo_name, pretrained=target.params, ctx=ctx)
    builder, kwargs = resolve_network({'class': target.net_class, 'kwargs': target.kwargs})
    net = builder(**kwargs)
    load_checkpoint(net, target.params, ctx=ctx)
    return net


@dataclass
class EvalData:
    """Which data to evaluate on; fields left ``None`` take the target's own."""
    dataset: str | None = None
    labels: str | None = None
    data_dir: str | None = None
    batch_size: int = 100
    input_size: int | None = None
    synthetic: bool = False
    rec_files: dict | None = None   # ImageNet .rec/.idx paths (``DEFAULT_REC_FILES`` keys)
    dtype: str = 'float32'          # the network's and the batches' precision


def val_loader(data, target, with_train=True):
    """(training, validation) loaders of the target's dataset, without augmentation: the
    training batches serve precise BN. With ``with_train=False`` only the validation data is
    read (training is ``None``), so evaluating needs no training files."""
    from mxnet import gluon

    from ..data import imagenet
    dataset = data.dataset or target.dataset
    if dataset == 'imagenet':
        size = data.input_size or target.input_size
        if data.synthetic:
            train, val = imagenet.synthetic_loaders(data.batch_size, size,
                                                    target.kwargs.get('classes', 1000))
            return (train if with_train else None), val
        if data.rec_files:
            files = {key: os.path.expanduser(path) for key, path in data.rec_files.items()}
            if not with_train:
                return None, imagenet.rec_val_loader(files['rec_val'], files['rec_val_idx'],
                                                     data.batch_size, size)
            return imagenet.rec_loaders(files['rec_train'], files['rec_train_idx'],
                                        files['rec_val'], files['rec_val_idx'],
                                        data.batch_size, size)
        root = os.path.expanduser(data.data_dir or '~/.mxnet/datasets/imagenet')
        if not with_train:
            return None, imagenet.folder_val_loader(root, data.batch_size, size)
        return imagenet.folder_loaders(root, data.batch_size, size)
    from ..data import SplitOptions, dataset_spec
    train, val = dataset_spec(dataset).splits(SplitOptions(
        data_dir=data.data_dir, labels=data.labels or target.labels,
        input_size=data.input_size or target.input_size, with_train=with_train))
    return tuple(None if split is None else
                 gluon.data.DataLoader(split, batch_size=data.batch_size, shuffle=False)
                 for split in (train, val))

def check_dtype(dtype, contexts):
    """``ValueError`` for a precision the devices cannot evaluate in: MXNet 1.9.1 has no
    float16 convolution on the CPU."""
    if dtype not in ('float32', 'float16'):
        raise ValueError(f'dtype must be float32 or float16, got {dtype!r}')
    if dtype == 'float16' and any(c.device_type == 'cpu' for c in contexts):
        raise ValueError('float16 needs GPUs: MXNet 1.9.1 has no float16 convolution on the '
                         'CPU (evaluate in float32, or name GPUs)')


def evaluate_checkpoint(name_or_path, data=None, precise_bn_batches=0, ctx=None):
    """Top-1/top-5 accuracy and loss of a zoo name, released file or training checkpoint
    (see :func:`resolve`), with the value to compare it with; returns a dict. ``ctx`` is a
    context or a list of them (each batch is split over the list). The training data is read
    only for precise BN (``precise_bn_batches > 0``); ``data.dtype`` float16 casts the
    network after that (GPUs only)."""
    from ..batchnorm import precise_bn
    from ..engine import evaluate
    data = data or EvalData()
    contexts = list(ctx) if isinstance(ctx, (list, tuple)) else [ctx or mx.cpu()]
    ctx = contexts[0]
    check_dtype(data.dtype, contexts)
    target = resolve(name_or_path)
    net = build(target, contexts)
    train, val = val_loader(data, target, with_train=bool(precise_bn_batches))
    net.hybridize(static_alloc=True)
    statistics = 'running statistics stored in the checkpoint'
    if precise_bn_batches:
        precise_bn(net, train, num_batches=precise_bn_batches, ctx=contexts)
        statistics = f'precise BN over {precise_bn_batches} training batches'
    if data.dtype != 'float32':
        net.cast(data.dtype)
        net.hybridize(static_alloc=True)  # drops a graph precise BN built for float32
    result = evaluate(net, val, contexts, dtype=data.dtype)
    return dict(result, target=name_or_path, dataset=data.dataset or target.dataset,
                labels=data.labels or target.labels, bn_statistics=statistics,
                dtype=data.dtype, reference=target.reference,
                reference_acc=target.reference_acc)


def report(result):
    """The lines the command prints for a result of :func:`evaluate_checkpoint`."""
    top5 = result['val_top5']
    lines = [f'checkpoint:    {result["target"]}',
             f'data:          {result["dataset"]} ({result["labels"]} labels), validation split',
             f'BatchNorm:     {result["bn_statistics"]}',
             f'top-1 acc:     {result["val_acc"]:.4f}   (top-1 err {1 - result["val_acc"]:.4f})',
             f'top-5 acc:     {top5:.4f}' if top5 is not None else 'top-5 acc:     n/a',
             f'loss:          {result["val_loss"]:.4f}',
             f'compare with:  {result["reference"] or "nothing recorded"}']
    if result.get('dtype', 'float32') != 'float32':
        lines.insert(3, f'precision:     {result["dtype"]}')
    return '\n'.join(lines)

