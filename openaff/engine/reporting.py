"""How a training run presents itself: the log lines of the original scripts (so that logs
compare with the released ones, ``../shared/reference/original_logs``) and how its best
checkpoint is named. The engine computes; a reporter formats."""
from __future__ import annotations

import logging

LOG = logging.getLogger('openaff')


class CifarReport:
    """``train_cifar.py``: one line per epoch, ``[Epoch N] train=<rmse> val=<acc> loss=...
    lr: ... time: ...``; best checkpoints named by accuracy (``0.8357-<run>-best.params``)."""

    # batches between the engine's waits for the devices (loss check, progress bar)
    interval = 50

    def batch(self, epoch, index, speed, rmse, lr):
        """Called every ``interval`` batches; the CIFAR log has no batch lines."""

    def epoch(self, epoch, record):
        LOG.info('[Epoch %d] train=%f val=%f loss=%f lr: %f time: %f', epoch,
                 record['train_rmse'], record['val_acc'], record['train_loss'], record['lr'],
                 record['time'])

    def best_name(self, epoch, score):
        """(number, epoch or None) in the name of the best checkpoint, of held-out ``score``
        (the task's: accuracy, or mean IoU for segmentation)."""
        return score, None


class ImageNetReport:
    """``train_imagenet.py``: ``Epoch[N] Batch [i] Speed: ...`` every ``interval`` batches,
    then training RMSE, speed and top-1/top-5 error per epoch; best checkpoints named by top-1
    error and epoch (``0.2028-<run>-235-best.params``)."""

    def __init__(self, interval=50):
        self.interval = interval

    def batch(self, epoch, index, speed, rmse, lr):
        """Called every ``interval`` batches (the engine syncs with the devices then)."""
        if self.interval:
            LOG.info('Epoch[%d] Batch [%d]\tSpeed: %f samples/sec\trmse=%f\tlr=%f', epoch, index,
                     speed, rmse, lr)

    def epoch(self, epoch, record):
        LOG.info('[Epoch %d] training: rmse=%f', epoch, record['train_rmse'])
        LOG.info('[Epoch %d] speed: %d samples/sec\ttime cost: %f', epoch, record['speed'],
                 record['time'])
        top5 = record['val_top5'] if record['val_top5'] is not None else float('nan')
        LOG.info('[Epoch %d] validation: err-top1=%f err-top5=%f', epoch,
                 1 - record['val_acc'], 1 - top5)

    def best_name(self, epoch, score):
        return 1 - score, epoch


class SegmentationReport(CifarReport):
    """``train_segmentation.py``: ``[Epoch N] loss=... train-pixel-acc=... val-mIoU=...
    val-pixel-acc=... lr: ... time: ...``; best checkpoints named by held-out mean IoU."""

    def epoch(self, epoch, record):
        LOG.info('[Epoch %d] loss=%f train-pixel-acc=%f val-mIoU=%f val-pixel-acc=%f lr: %f '
                 'time: %f', epoch, record['train_loss'], record['train_acc'],
                 record['val_miou'], record['val_pixel_acc'], record['lr'], record['time'])
