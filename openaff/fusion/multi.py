"""AFF of any number of inputs, for the paper's same-layer scenario (Dai et al., "Attentional
Feature Fusion", WACV 2021, Sec. 4 and Fig. 9: fusing an Inception module's branches).

For inputs ``X_1 ... X_N`` of one shape, MS-CAM's two branches read ``S = X_1 + ... + X_N``
and give ``N - 1`` logit maps ``z_i = L_i(S) + G_i(S)``; the last input's logit is fixed at 0,
and ``Z = N * sum_i a_i X_i`` with ``a = softmax(z_1, ..., z_{N-1}, 0)`` over the inputs. For
N = 2, ``softmax(z, 0) = (sigmoid(z), 1 - sigmoid(z))``: exactly :class:`~.catalog.ASKCFuse`
(AFF), with its parameter names, so it loads AFF checkpoints.
"""
from __future__ import annotations

from mxnet.gluon.block import HybridBlock

from .catalog import _reduced
from .core import context_branch
from .graphs import DeviceGraphs
from .registry import register

__all__ = ['MultiAFF']


@register('MultiASKCFuse')
class MultiAFF(DeviceGraphs, HybridBlock):
    """``block(x_1, ..., x_N)`` -> the attention-weighted sum of ``num_inputs`` maps of
    ``channels`` channels (see the module docstring); ``r`` is MS-CAM's reduction ratio."""

    def __init__(self, channels=64, num_inputs=2, r=4, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(num_inputs, int) and num_inputs >= 2):
            raise ValueError(f'num_inputs must be an int of at least 2, got {num_inputs!r}')
        self.num_inputs, self.channels = num_inputs, channels
        widths = (_reduced(channels, r), channels * (num_inputs - 1))
        with self.name_scope():
            self.local_att = context_branch('local_att', widths)
            self.global_att = context_branch('global_att', widths, pooled=True)

    def hybrid_forward(self, F, *inputs):
        if len(inputs) != self.num_inputs:
            raise ValueError(f'MultiAFF({self.num_inputs} inputs) called with {len(inputs)}')
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        logits = F.broadcast_add(self.local_att(total), self.global_att(total))
        if self.num_inputs == 2:  # the same operators as ASKCFuse: sigmoid, not a softmax
            weight = F.sigmoid(logits)
            return 2 * (inputs[0] * weight + inputs[1] * (1 - weight))
        # softmax over [z_1 .. z_{N-1}, 0], stabilised by the largest logit (at least 0)
        parts = [F.slice_axis(logits, axis=1, begin=i * self.channels,
                              end=(i + 1) * self.channels) for i in range(self.num_inputs - 1)]
        top = F.relu(parts[0])
        for part in parts[1:]:
            top = F.maximum(top, part)
        exps = [F.exp(part - top) for part in parts] + [F.exp(-top)]
        norm = exps[0]
        for e in exps[1:]:
            norm = norm + e
        fused = inputs[0] * exps[0]
        for x, e in zip(inputs[1:], exps[1:]):
            fused = fused + x * e
        return self.num_inputs * fused / norm
