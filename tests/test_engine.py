"""Engine pieces: schedules, targets, atomic checkpoints, log parsing and plots."""

import re

import mxnet as mx
import numpy as np
import pytest
from conftest import SHARED, classifier_engine

from openaff.cli.plotlog import main as plotlog
from openaff.engine import CheckpointManager, History, atomic_save, make_lr_scheduler, parse_log
from openaff.engine.schedule import decay_epochs
from openaff.engine.targets import draw_mixup_lambda, mixup_batch, new_rng, soft_targets

LOGS = sorted((SHARED / 'reference' / 'original_logs').glob('*.log'))


def test_warmup_then_cosine_reaches_the_values_of_the_original_log():
    # the released AFF-ResNeXt-47 cosine log: lr 0.010005 after epoch 0, 0.020010 after epoch 1
    # (warm-up of 20 epochs to 0.2, batches of 128 x 4 GPUs over 50000 images)
    iters = 50000 // 512
    schedule = make_lr_scheduler("cosine", 0.2, 640, iters, warmup_epochs=20)
    assert schedule(iters) == pytest.approx(0.010005, abs=1e-6)
    assert schedule(2 * iters) == pytest.approx(0.020010, abs=1e-6)
    assert schedule(20 * iters) == pytest.approx(0.2, abs=1e-3)
    assert schedule(640 * iters) == pytest.approx(0.0, abs=1e-6)


def test_step_schedule_decays_at_the_given_epochs():
    schedule = make_lr_scheduler('step', 0.2, 20, 10, step_epochs=[5, 10])
    assert [round(schedule(e * 10), 6) for e in (0, 4, 5, 9, 10, 19)] == \
        [0.2, 0.2, 0.02, 0.02, 0.002, 0.002]
    assert decay_epochs(100, '30,60') == [30, 60]
    assert decay_epochs(100, '30,60', lr_decay_period=40) == [40, 80]
    with pytest.raises(ValueError, match='unknown lr mode'):
        make_lr_scheduler('exp', 0.1, 1, 1)


def _logged_lr(log, epoch):
    match = re.search(rf'\[Epoch {epoch}\] .* lr: ([0-9.]+) ', log)
    return float(match.group(1))


@pytest.mark.parametrize('epoch', [288, 289, 290, 291, 439, 440, 639])
def test_cifar_step_decay_matches_the_original_log_to_the_update(epoch):
    """The released AFF-ResNet-32 run (no --cosine): decay epochs 300,450 minus the 10
    warm-up epochs, applied before epoch 290's first update; its log prints the lr after each
    epoch's last update (390 updates of 128 over 50000 images)."""
    path = next((p for p in LOGS if 'AFF-ResNet-32__train' in p.name), None)
    if path is None:
        pytest.skip('no original logs')
    from openaff.cli.train_cifar import build_parser, recipe_of
    log = path.read_text()
    opt = build_parser().parse_args(['--lr', '0.2', '--warmup-epochs', '10'])
    recipe = recipe_of(opt, seed=0)
    iters = 50000 // 128
    schedule = make_lr_scheduler(recipe.lr_mode, recipe.lr, recipe.num_epochs, iters,
                                 recipe.warmup_epochs, recipe.warmup_lr, recipe.step_epochs,
                                 recipe.step_factor)
    last, first = (epoch + 1) * iters, epoch * iters + 1
    assert schedule(last) == pytest.approx(_logged_lr(log, epoch), rel=1e-6)
    # the epoch's first update already trains at the rate printed after it
    assert schedule(first) == pytest.approx(_logged_lr(log, epoch), rel=1e-6)


def test_epoch_step_refuses_a_warmup():
    with pytest.raises(ValueError, match='no warm-up'):
        make_lr_scheduler('epoch_step', 0.1, 10, 5, warmup_epochs=2)


def test_label_smoothing_and_mixup_targets():
    labels = mx.nd.array([0, 2])
    smooth = soft_targets(labels, 4, eta=0.1).asnumpy()
    np.testing.assert_allclose(smooth[0], [0.925, 0.025, 0.025, 0.025])
    data = mx.nd.array([[1.0], [3.0]])
    mixed, targets = mixup_batch(data, labels, 4, lam=0.75)
    np.testing.assert_allclose(mixed.asnumpy().ravel(), [1.5, 2.5])
    np.testing.assert_allclose(targets.asnumpy()[0], [0.75, 0, 0.25, 0])
    assert draw_mixup_lambda(new_rng(0, 0), 1.0, active=False) == 1.0
    assert (draw_mixup_lambda(new_rng(3, 5), 1.0, True)
            == draw_mixup_lambda(new_rng(3, 5), 1.0, True))


def test_atomic_save_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / 'x.params'
    atomic_save(str(target), lambda p: open(p, 'w').write('old'))

    def crash(path):
        with open(path, 'w') as handle:
            handle.write('half')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(str(target), crash)
    assert target.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['x.params']


def test_checkpoint_manager_keeps_recent_and_periodic_sets(tmp_path):
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = mx.gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1})
    manager = CheckpointManager(tmp_path, 'm', keep=2, save_period=3)
    for epoch in range(7):
        manager.save(net, trainer, epoch, {'seed': 1})
    kept = sorted(p.name for p in tmp_path.glob('m-epoch*.params'))
    assert kept == ['m-epoch0002.params', 'm-epoch0005.params', 'm-epoch0006.params']
    latest = manager.latest()
    assert latest['epoch'] == 6 and latest['params'].endswith('m-epoch0006.params')
    assert manager.find('latest') == latest
    best = manager.save_best(net, 0.1234, epoch=3)
    assert best.endswith('0.1234-m-3-best.params')
    with pytest.raises(FileNotFoundError):
        CheckpointManager(tmp_path / 'empty', 'm').find('latest')


def test_half_written_files_of_a_killed_run_are_removed_and_only_those(tmp_path):
    """Best weights start with their score, so their temporaries too."""
    stale = ['.m-epoch0001.params.tmp-41', '.0.9021-m-best.params.tmp-41',
             '.m-checkpoint.json.tmp-41']
    kept = ['m-epoch0001.params', '0.9021-m-best.params', '.other-epoch0001.params.tmp-41']
    for name in stale + kept:
        (tmp_path / name).write_text('x')
    CheckpointManager(tmp_path, 'm')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_an_epoch_file_resumes_after_its_epoch_with_the_history_up_to_it(tmp_path):
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    manager = CheckpointManager(tmp_path, 'm', keep=5)
    history = []
    for epoch in range(3):
        history.append({'epoch': epoch, 'val_acc': 0.1 * (epoch + 1)})
        manager.save(net, None, epoch, {'seed': 5, 'history': list(history)})
    record = manager.find(str(tmp_path / 'm-epoch0001.params'))
    assert record['epoch'] == 1 and record['seed'] == 5
    assert [r['epoch'] for r in record['history']] == [0, 1]
    assert record['best'] == pytest.approx(0.2)


@pytest.mark.skipif(not LOGS, reason='no original logs in ../shared/reference')
@pytest.mark.parametrize('log', LOGS, ids=[p.name[:40] for p in LOGS])
def test_original_logs_parse(log):
    curve = parse_log(log)
    assert len(curve) >= 100 and all(0 <= v <= 1 for v in curve.values())


def test_parse_log_reads_both_formats(tmp_path):
    cifar = tmp_path / 'c.log'
    cifar.write_text('Namespace(a=1)\n[Epoch 0] train=0.1 val=0.5 loss=2 lr: 0.1 time: 1\n'
                     '[Epoch 1] train=0.1 val=0.6 loss=2 lr: 0.1 time: 1\n')
    imagenet = tmp_path / 'i.log'
    imagenet.write_text('[Epoch 0] validation: err-top1=0.900000 err-top5=0.7\n')
    assert parse_log(cifar) == {0: 0.5, 1: 0.6}
    assert parse_log(imagenet) == {0: pytest.approx(0.1)}


def test_history_plot_and_plotlog_write_pngs(tmp_path):
    history = History()
    for epoch in range(3):
        history.add(epoch=epoch, train_acc=0.5 + 0.1 * epoch, val_acc=0.4 + 0.1 * epoch)
    log = tmp_path / 'run.log'
    log.write_text(''.join(f'[Epoch {e}] train=0.1 val={0.4 + 0.1 * e} loss=1 lr: 0.1 time: 1\n'
                           for e in range(3)))
    png = history.plot(str(tmp_path / 'h.png'), compare_log=str(log))
    assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert plotlog([str(log), '-o', str(tmp_path / 'c.png')]) == 0
    assert (tmp_path / 'c.png').stat().st_size > 1000
    (tmp_path / 'empty.log').write_text('nothing\n')
    assert plotlog([str(tmp_path / 'empty.log'), '-o', str(tmp_path / 'd.png')]) == 2


def _tiny_loaders(batch=8, batches=2, classes=4, seed=0):
    rng = np.random.RandomState(seed)
    data = [(mx.nd.array(rng.normal(size=(batch, 3, 16, 16)).astype('float32')),
             mx.nd.array(rng.randint(0, classes, size=batch).astype('float32')))
            for _ in range(batches)]
    return data, data[:1]


def _tiny_net(classes=4):
    from openaff.models import CIFARAFFResNet
    net = CIFARAFFResNet('ASKCFuse', 1, [1, 1, 1], [8, 8, 8, 8], classes, False)
    return net


@pytest.mark.parametrize('contexts', [[mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]], ids=['1ctx', '2ctx'])
def test_engine_distills_from_a_teacher_on_several_devices(tmp_path, contexts):
    from openaff.engine import Recipe
    train, val = _tiny_loaders()
    teacher = _tiny_net()
    teacher.initialize(ctx=contexts)
    net = _tiny_net()
    net.initialize(mx.init.Xavier(), ctx=contexts)
    recipe = Recipe(num_epochs=2, lr=0.05, mixup=True, label_smoothing=True, no_wd=True,
                    warmup_epochs=1, lr_mode='cosine', seed=3, temperature=4, hard_weight=0.5)
    engine = classifier_engine(net, recipe, contexts, train, val, 4, 'tiny', str(tmp_path),
                               teacher=teacher)
    for ctx in contexts:
        net(train[0][0].as_in_context(ctx))
    before = net.features[1].weight.data(contexts[0]).asnumpy().copy()
    records = engine.fit()
    assert [r['epoch'] for r in records] == [0, 1]
    assert np.isfinite(records[-1]['train_loss']) and 0 <= records[-1]['val_acc'] <= 1
    after = [net.features[1].weight.data(c).asnumpy() for c in contexts]
    assert not np.allclose(after[0], before)
    for copy in after[1:]:  # every device holds the same weights after each step
        np.testing.assert_allclose(copy, after[0], rtol=1e-6, atol=1e-7)
    for param in net.collect_params('.*beta|.*gamma|.*bias').values():
        assert param.wd_mult == 0.0


def test_the_best_checkpoint_follows_the_tasks_score(tmp_path):
    """The engine keeps the best checkpoint, reports the best value and names the score in
    the checkpoint record by the task's ``score``, not by a fixed record entry: here a score
    that peaks at epoch 1 while ``val_acc`` keeps rising."""
    import json

    from openaff.engine import Engine, Outputs, Recipe
    from openaff.engine.reporting import CifarReport
    from openaff.engine.tasks import Classification

    class Scored(Classification):
        score = 'val_score'

        def evaluate(self, net, loader, contexts, dtype, cluster, beat):
            epoch = len(seen)
            seen.append(epoch)
            return {'val_acc': 0.1 * (epoch + 1), 'val_score': (0.2, 0.6, 0.4)[epoch]}

    seen = []
    train, val = _tiny_loaders(batches=1)
    net = _tiny_net()
    net.initialize(mx.init.Xavier())
    engine = Engine(net, Recipe(num_epochs=3, lr=0.01, seed=0), [mx.cpu()], train, val,
                    Scored(4), CifarReport(), Outputs('scored', str(tmp_path)))
    engine.fit()
    assert engine.best == 0.6
    assert sorted(p.name for p in tmp_path.glob('*-best.params')) == [
        '0.2000-scored-best.params', '0.6000-scored-best.params']  # each a new best when saved
    record = json.loads((tmp_path / 'scored-checkpoint.json').read_text())
    assert record['score'] == 'val_score' and record['best'] == 0.6


@pytest.mark.multiprocess
def test_importing_openaff_leaves_matplotlib_alone(tmp_path):
    """The backend is chosen when a figure is drawn; a process that already uses pyplot keeps
    its backend."""
    import subprocess
    import sys
    code = (
        'import sys\n'
        'import openaff, openaff.engine, openaff.apps.compare, openaff.apps.benchmark, '
        'openaff.apps.plotlog\n'
        'import openaff.cli.train_cifar, openaff.cli.compare, openaff.cli.evaluate\n'
        'assert "matplotlib.pyplot" not in sys.modules\n'
        'import matplotlib; matplotlib.use("svg"); import matplotlib.pyplot\n'
        'from openaff.engine import History\n'
        'h = History(); h.add(epoch=0, train_acc=0.5, val_acc=0.6)\n'
        f'h.plot({str(tmp_path / "h.png")!r})\n'
        'print(matplotlib.get_backend())\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip().splitlines()[-1] == 'svg'
    assert (tmp_path / 'h.png').exists()
