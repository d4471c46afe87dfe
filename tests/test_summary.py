"""Tests for openaff.apps.summary."""
import json

import mxnet as mx
import pytest
from mxnet.gluon import nn

from openaff.apps.summary import ModelSummary, layer_flops, summarize
from openaff.cli.summary import main


def _trainable_sum(net):
    return sum(p.data().size for p in net.collect_params().values()
               if p.grad_req != "null")


def _total_sum(net):
    return sum(p.data().size for p in net.collect_params().values())


class _Attention(nn.HybridBlock):
    """Small AFF-like block with nested named children."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.local_att = nn.HybridSequential()
            self.local_att.add(nn.Conv2D(channels, 1), nn.BatchNorm(),
                               nn.Activation("relu"))

    def hybrid_forward(self, F, x):
        return x * F.sigmoid(self.local_att(x))


class _Stage(nn.HybridBlock):
    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(channels, 3, padding=1, use_bias=False)
            self.attention = _Attention(channels)

    def hybrid_forward(self, F, x):
        return self.attention(self.conv(x))


def _small_net():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm())
        layer1 = nn.HybridSequential()
        layer1.add(_Stage(8), _Stage(8))
        net.add(layer1, nn.GlobalAvgPool2D(), nn.Dense(10))
    net.initialize()
    return net


def _only_row(net, shape):
    kind = type(net).__name__
    rows = [r for r in summarize(net, shape).rows if r.type == kind]
    assert len(rows) == 1
    return rows[0]


def test_conv2d_flops_by_hand():
    conv = nn.Conv2D(16, kernel_size=3, strides=2, padding=1, in_channels=4)
    conv.initialize()
    row = _only_row(conv, (1, 4, 32, 32))
    out_h = out_w = 16
    expected = 4 * 3 * 3 * 16 * out_h * out_w + 16 * out_h * out_w
    assert row.output_shape == (1, 16, out_h, out_w)
    assert row.flops == expected
    assert row.params == 16 * 4 * 9 + 16


def test_conv2d_without_bias_and_batch_ignored():
    conv = nn.Conv2D(6, kernel_size=(1, 3), use_bias=False, in_channels=2)
    conv.initialize()
    row = _only_row(conv, (5, 2, 7, 9))
    assert row.flops == 2 * 1 * 3 * 6 * 7 * 7


def test_grouped_conv_flops_by_hand():
    conv = nn.Conv2D(32, kernel_size=3, padding=1, groups=4, in_channels=16)
    conv.initialize()
    row = _only_row(conv, (1, 16, 10, 10))
    expected = 16 * 3 * 3 * 32 * 10 * 10 // 4 + 32 * 10 * 10
    assert row.flops == expected


def test_dense_flops_by_hand():
    dense = nn.Dense(10, in_units=20)
    dense.initialize()
    assert _only_row(dense, (3, 20)).flops == 2 * 20 * 10 - 20 + 10
    no_bias = nn.Dense(10, in_units=20, use_bias=False)
    no_bias.initialize()
    assert _only_row(no_bias, (1, 20)).flops == 2 * 20 * 10 - 20


def test_other_layers_count_zero():
    net = _small_net()
    result = summarize(net, (1, 3, 8, 8))
    for row in result.rows:
        if row.type not in ("Conv2D", "Dense"):
            assert row.flops == 0
    assert result.flops == sum(r.flops for r in result.rows)


def test_param_totals_match_collect_params_with_batchnorm():
    net = _small_net()
    result = summarize(net, (1, 3, 8, 8))
    assert result.trainable_params == _trainable_sum(net)
    assert result.total_params == _total_sum(net)
    bn_running = 3 * 2 * 8  # running_mean + running_var of three BatchNorms
    assert result.non_trainable_params == bn_running
    assert result.total_params == result.trainable_params + bn_running


def test_deferred_initialisation():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, activation="relu"), nn.BatchNorm(), nn.Dense(3))
    net.initialize()
    result = summarize(net, (1, 2, 6, 6))
    assert result.trainable_params == _trainable_sum(net)
    conv = next(r for r in result.rows if r.type == "Conv2D")
    assert conv.flops == 2 * 9 * 4 * 16 + 4 * 16


def test_rows_named_by_structural_path():
    net = _small_net()
    names = [r.name for r in summarize(net, (1, 3, 8, 8)).rows]
    assert "2.0.attention.local_att.0" in names
    assert "2.1.conv" in names
    assert "0" in names and "4" in names
    assert not any(n == "2" or n.endswith("local_att") for n in names)
    param_paths = net._collect_params_with_prefix()
    for row in summarize(net, (1, 3, 8, 8)).rows:
        if row.params:
            assert row.name + ".weight" in param_paths or \
                row.name + ".gamma" in param_paths


def test_hybridized_matches_imperative():
    net = _small_net()
    plain = summarize(net, (1, 3, 8, 8))
    net.hybridize()
    net(mx.nd.zeros((1, 3, 8, 8)))
    hybrid = summarize(net, (1, 3, 8, 8))
    assert hybrid.to_dict() == plain.to_dict()
    assert net._active and net[2]._active


def test_hybridized_before_first_call_matches():
    plain = summarize(_small_net(), (1, 3, 8, 8))
    net = _small_net()
    net.hybridize(static_alloc=True)
    assert summarize(net, (1, 3, 8, 8)).to_dict() == plain.to_dict()
    out = net(mx.nd.zeros((1, 3, 8, 8)))
    assert out.shape == (1, 10)


def test_hooks_detached_after_summary():
    net = _small_net()
    summarize(net, (1, 3, 8, 8))
    net.apply(lambda b: not b._forward_hooks or pytest.fail(b.name))


def test_hooks_detached_on_error():
    net = _small_net()
    with pytest.raises(ValueError):
        summarize(net, (1, 5))
    net.apply(lambda b: not b._forward_hooks or pytest.fail(b.name))


def test_shared_parameter_counted_once():
    net = nn.HybridSequential()
    first = nn.Dense(6, in_units=6)
    net.add(first, nn.Dense(6, in_units=6, params=first.params))
    net.initialize()
    result = summarize(net, (1, 6))
    assert result.total_params == 6 * 6 + 6
    assert result.trainable_params == _trainable_sum(net)
    assert [r.params for r in result.rows] == [42, 42]


def test_reused_block_appears_per_call():
    class Twice(nn.HybridBlock):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.fc = nn.Dense(4, in_units=4)

        def hybrid_forward(self, F, x):
            return self.fc(self.fc(x))

    net = Twice()
    net.initialize()
    result = summarize(net, (1, 4))
    assert [r.name for r in result.rows] == ["fc", "fc"]
    assert result.flops == 2 * (2 * 4 * 4 - 4 + 4)
    assert result.total_params == 20


def test_text_and_dict_outputs():
    net = _small_net()
    result = summarize(net, (1, 3, 8, 8))
    assert isinstance(result, ModelSummary)
    table = result.table()
    assert "2.0.attention.local_att.0" in table
    widths = {len(line) for line in table.splitlines()}
    assert len(widths) == 1
    totals = result.totals()
    assert f"Trainable params: {result.trainable_params:,} (" in totals
    assert "M)" in totals and "G)" in totals
    data = json.loads(json.dumps(result.to_dict()))
    assert data["trainable_params"] == result.trainable_params
    assert data["input_shape"] == [1, 3, 8, 8]
    assert len(data["rows"]) == len(result.rows)


def test_thousands_separators_and_units():
    result = ModelSummary(total_params=30373192, trainable_params=30373192,
                          flops=4_500_000_000, input_shape=(1, 3, 224, 224))
    text = result.totals()
    assert "Trainable params: 30,373,192 (30.37M)" in text
    assert "FLOPs: 4,500,000,000 (4.50G)" in text


def test_layer_flops_zero_for_other_blocks():
    assert layer_flops(nn.BatchNorm(), mx.nd.zeros((1, 2, 3, 3))) == 0


def test_cli_prints_totals_table_and_json(capsys, tmp_path):
    out_file = tmp_path / "summary.json"
    assert main(["cifar_aff_resnet32", "--classes", "7", "--per-layer",
                 "--json", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "Trainable params:" in text and "BatchNorm" in text
    data = json.loads(out_file.read_text())
    assert data["input_shape"] == [1, 3, 32, 32]  # the zoo's input size for the model
    assert data["rows"][-1]["type"] == "Dense" and data["rows"][-1]["output_shape"] == [1, 7]


def test_cli_unknown_name_is_one_line(capsys):
    assert main(["definitely_not_a_model"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err and captured.out == ""
