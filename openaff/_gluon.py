"""Small Gluon utilities shared by the summary, precise BatchNorm and the engine."""
from contextlib import contextmanager

from mxnet.gluon import nn


def is_trainable(param):
    """Updated by the optimizer: has a gradient and a non-zero learning-rate multiplier."""
    return param.grad_req != 'null' and param.lr_mult != 0


def all_blocks(net):
    """Every block of ``net`` (itself included), each once."""
    blocks, stack, seen = [], [net], set()
    while stack:
        block = stack.pop()
        if id(block) in seen:
            continue
        seen.add(id(block))
        blocks.append(block)
        stack.extend(block._children.values())
    return blocks


def batch_norms(net):
    """The BatchNorm layers of ``net`` (SyncBatchNorm included), in structural order."""
    return [block for block in reversed(all_blocks(net)) if isinstance(block, nn.BatchNorm)]


@contextmanager
def imperative(net):
    """Run a hybridized net imperatively (forward hooks fire only then), keeping its cached
    graphs and hybridize options for afterwards."""
    saved = [(block, block._active) for block in all_blocks(net) if hasattr(block, '_active')]
    for block, _ in saved:
        block._active = False
    try:
        yield net
    finally:
        for block, active in saved:
            block._active = active


@contextmanager
def forward_hooks(blocks, hook, pre=False):
    """Attach ``hook`` to ``blocks`` (as a forward pre-hook when ``pre``) for the block."""
    register = 'register_forward_pre_hook' if pre else 'register_forward_hook'
    handles = [getattr(block, register)(hook) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.detach()
