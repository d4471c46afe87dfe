"""Shared test helpers: the ../shared compat fixtures, small random inputs, gradient checks."""
import json
import os
import pathlib
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from openaff._gluon import is_trainable

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
COMPAT = SHARED / 'compat'


# what the compatibility, parity and original-log tests read; without them they would skip
SHARED_FIXTURES = (COMPAT / 'numeric' / 'index.json', COMPAT / 'released_manifest.json',
                   COMPAT / 'training', SHARED / 'reference' / 'original_logs')
WITHOUT_SHARED = 'OPENAFF_WITHOUT_SHARED'


def pytest_configure(config):
    """A checkout without the ../shared fixtures fails the run up front instead of skipping
    the tests that compare with the original code: a green run then means they ran.
    ``OPENAFF_WITHOUT_SHARED=1`` keeps the skips, for checkouts that cannot have them."""
    missing = [str(path) for path in SHARED_FIXTURES
               if not path.exists() or path.is_dir() and not any(path.iterdir())]
    if missing and os.environ.get(WITHOUT_SHARED) != '1':
        raise pytest.UsageError(
            f'the ../shared fixtures are missing ({", ".join(missing)}): the compatibility, '
            f'parity and original-log tests need them; set {WITHOUT_SHARED}=1 to skip those '
            f'tests instead')


def compat_index():
    """The numeric fixtures, or {} when ../shared is absent (tests then skip)."""
    path = COMPAT / 'numeric' / 'index.json'
    return json.loads(path.read_text()) if path.exists() else {}


def released_manifest():
    path = COMPAT / 'released_manifest.json'
    return json.loads(path.read_text()) if path.exists() else {}


def needs_compat(items):
    """Parametrize values, or one skipped case saying why when the fixtures are missing."""
    if items:
        return items
    return [pytest.param(None, marks=pytest.mark.skip(reason=f'no fixtures at {COMPAT}'))]


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    np.random.seed(0)


def random_input(*shape):
    return mx.nd.array(np.random.uniform(-1, 1, size=shape).astype('float32'))


def ones_for_gammas(net):
    """Zero-initialised gammas (``last_gamma``) would block the gradient of the branch before
    them; set them to one so a gradient check sees every parameter."""
    for name, param in net.collect_params().items():
        if name.endswith('gamma') and param.grad_req != 'null':
            param.set_data(mx.nd.ones(param.shape))


def assert_every_param_gets_gradient(net, *inputs):
    """Non-zero gradient for every learnable parameter. Recorded in inference mode: with batch
    statistics a conv bias right before a BatchNorm has an exactly zero gradient (the mean
    subtraction cancels it), which would hide a disconnected parameter among honest zeros."""
    with mx.autograd.record(train_mode=False):
        loss = net(*inputs).square().sum()
    loss.backward()
    silent = [name for name, param in net._collect_params_with_prefix().items()
              if is_trainable(param) and not np.any(param.grad().asnumpy())]
    assert not silent, f'no gradient reached: {silent}'


def assert_hybrid_matches_imperative(net, *inputs, rtol=1e-5, atol=1e-6):
    """Inference and training-mode outputs agree; the running statistics that a recorded
    training pass updates are restored before the hybridized passes."""
    def training_pass():
        with mx.autograd.record(train_mode=True):
            return net(*inputs).asnumpy()

    imperative = net(*inputs).asnumpy()
    params = net.collect_params()
    saved = {key: param.data().copy() for key, param in params.items()}
    imperative_train = training_pass()
    for key, value in saved.items():
        params[key].set_data(value)
    net.hybridize()
    np.testing.assert_allclose(net(*inputs).asnumpy(), imperative, rtol=rtol, atol=atol)
    np.testing.assert_allclose(training_pass(), imperative_train, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- tiny CIFAR data and runs
def tiny_images(n, classes, seed):
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, size=n)
    # class-dependent brightness so there is something to learn
    images = (rng.randint(0, 60, size=(n, 32, 32, 3)) + labels[:, None, None, None] * 190 //
              max(1, classes - 1)).clip(0, 255).astype(np.uint8)
    return images, labels.astype(np.int32)


def write_tiny_cifar(root, name, fmt, archive=False, n_train=64, n_test=32):
    """A CIFAR release of ``n_train``/``n_test`` images in an official format, under ``root``."""
    from cifar_files import write_cifar
    classes = 10 if name == 'cifar10' else 100
    images, labels = tiny_images(n_train, classes, 0)
    test_images, test_labels = tiny_images(n_test, classes, 1)
    write_cifar(root, name, fmt, images, labels, archive=archive, test_images=test_images,
                test_labels=test_labels)
    return root


def run_dir_args(path):
    return ['--save-dir', str(path), '--logging-dir', str(path), '--save-plot-dir', str(path)]



# ---------------------------------------------------------------- commands in their own process
COMMAND_ENV = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS='ignore')


def run_command(script, *args, timeout=300):
    """``python SCRIPT ...`` (a top-level script) or ``python -m MODULE ...``, in the repo."""
    command = [sys.executable, *(['-m', script] if not script.endswith('.py')
                                 else [str(REPO / script)]), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=COMMAND_ENV, cwd=REPO,
                          timeout=timeout)


def assert_one_line_error(done, fragment, status=2):
    """The command ended with ``status`` and exactly one ``error:`` line holding
    ``fragment``, without a traceback."""
    err = done.stderr
    assert 'Traceback' not in err, err[-3000:]
    assert done.returncode == status, (done.returncode, err[-2000:])
    errors = [line for line in err.splitlines() if 'error:' in line]
    assert len(errors) == 1, err[-2000:]
    assert fragment.lower() in errors[0].lower(), errors[0]


def save_as_training_run(net, folder, dataset='imagenet', input_size=32):
    """``net`` saved as a training run's best checkpoint with its record beside it (what
    evaluation and Grad-CAM resolve); returns the .params path."""
    from openaff.models import builder_name
    params = folder / 'tiny-best.params'
    net.save_parameters(str(params))
    (folder / 'tiny-checkpoint.json').write_text(json.dumps({
        'model': 'tiny', 'dataset': dataset, 'input_size': input_size,
        'net': {'class': builder_name(type(net)), 'kwargs': net.model_info.args},
        'history': [{'epoch': 0, 'val_acc': 0.5}]}))
    return params


def classifier_engine(net, recipe, contexts, train, val, classes, name, save_dir, cluster=None,
                      teacher=None):
    """An :class:`~openaff.engine.Engine` that trains ``net`` as ``train_cifar.py`` does
    (classification, the CIFAR log), distilled from ``teacher`` when one is given."""
    from openaff.engine import Engine, Outputs
    from openaff.engine.reporting import CifarReport
    from openaff.engine.tasks import Classification, Distillation
    task = Classification(classes)
    if teacher is not None:
        task = Distillation(task, teacher, recipe.temperature, recipe.hard_weight)
    return Engine(net, recipe, contexts, train, val, task, CifarReport(),
                  Outputs(name, save_dir), cluster=cluster)
