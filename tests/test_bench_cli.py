"""``onlinenorm bench layer`` runs end to end and prints its ratio table (no timing asserted)."""

import re

import pytest
import torch

import onlinenorm
from onlinenorm.bench import paired_ratio, saved_bytes_per_element, time_interleaved
from onlinenorm.cli import main


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[3:]]


def test_bench_layer_prints_ratio_table(capsys):
    assert main(["bench", "layer", "--shape", "3x2x5x5", "--shape", "2x4x3x3", "--kernels", "eager",
                 "--rounds", "2", "--oracle-rounds", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["shape", "candidate", "ms", "x", "BN", "saved", "B/elem"]
    candidates = ["batchnorm", "ac", "ls", "none", "ls-autograd", "loop"]
    for start, shape in ((3, "(3, 2, 5, 5)"), (3 + len(candidates) + 1, "(2, 4, 3, 3)")):
        block = lines[start:start + len(candidates)]
        assert block[0].startswith(shape)
        assert [row.split()[-4] for row in block] == candidates
        assert all(float(row.split()[-3]) > 0 and float(row.split()[-2]) > 0 for row in block)
        assert float(block[0].split()[-2]) == 1.0  # batch norm against itself
        summary = lines[start + len(candidates)]
        assert "ac/ls " in summary and "ac/ls-autograd " in summary and "loop/fastest ac " in summary
        low, middle, high = map(float, re.search(r"ac/ls ([\d.]+) \[([\d.]+)-([\d.]+)\]", summary).group(2, 1, 3))
        assert 0 < low <= middle <= high


def test_rounds_rotate_the_order_of_the_candidates():
    order = []
    samples = time_interleaved({name: (lambda name=name: order.append(name)) for name in "abc"},
                               rounds=4, device=torch.device("cpu"), warmup=0)
    assert "".join(order) == "abc" "bca" "cab" "abc"
    assert {name: len(times) for name, times in samples.items()} == {"a": 4, "b": 4, "c": 4}


def test_paired_ratio_gives_the_quartiles_of_the_per_round_ratios():
    low, middle, high = paired_ratio([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert (low, middle, high) == (1.5, 3.0, 4.5)  # statistics.quantiles' default (exclusive) method
    assert paired_ratio([2.0], [4.0]) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("kernels", ["eager", "native"])
@pytest.mark.parametrize("ecm", onlinenorm.ECMS)
def test_layer_saves_no_more_for_backward_than_batch_norm(ecm, kernels):
    """Per activation, the layer keeps what batch norm keeps: its input, plus O(N*C) statistics."""
    x = torch.randn(64, 32, 16, 16)
    bn_bytes = saved_bytes_per_element(torch.nn.BatchNorm2d(32), x)
    layer_bytes = saved_bytes_per_element(onlinenorm.OnlineNorm2d(32, ecm=ecm, kernels=kernels), x)
    assert 4.0 <= bn_bytes < 4.01  # the float32 input
    assert layer_bytes <= bn_bytes + 7 * 4 / (16 * 16)  # seven (N, C) float32 statistics


@pytest.mark.slow
def test_bench_layer_times_compiled_and_native_kernels_beside_eager(capsys):
    assert main(["bench", "layer", "--shape", "4x3x5x5", "--rounds", "1", "--oracle-rounds", "0",
                 "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-4] for line in lines[3:14]] == [
        "batchnorm", "ac", "ls", "none", "ac*", "ls*", "none*", "ac+", "ls+", "none+", "ls-autograd"]
    assert "ac*/ls* " in lines[14] and "ac+/ls+ " in lines[14]
    assert lines[-1].startswith("* = kernels='compiled'")


def test_bench_layer_rejects_unknown_kernels(capsys):
    assert main(["bench", "layer", "--kernels", "eager,fast"]) == 2
    assert capsys.readouterr().err.strip() == (
        "onlinenorm bench: error: --kernels must list some of eager, compiled, native; got 'eager,fast'")


@pytest.mark.parametrize("argv,message", [
    (["--shape", "3x2x5"], "shape must be four positive sizes"),
    (["--shape", "axbxcxd"], "shape must look like 128x16x32x32"),
])
def test_bench_layer_rejects_bad_shapes(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "layer", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_layer_rejects_cuda_without_device(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "layer", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onlinenorm bench: error: --device cuda asked for, but torch sees no CUDA device; use --device cpu"]


def test_bench_train_prints_step_ratios(capsys):
    assert main(["bench", "train", "--batch-size", "4", "--steps", "1", "--rounds", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "resnet20, batch 4, cpu, 1 threads"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == ["batch", "online-ac", "online-ls"]
    assert rows["batch"][2:] == ["1.00x", "1.00x"]
    assert all(float(cells[0]) > 0 for cells in rows.values())


def test_bench_train_rejects_unknown_variants(capsys):
    assert main(["bench", "train", "--norms", "batch,online-xx"]) == 2
    assert "--norms must list some of batch, group, layer, instance, none, online-ac" in capsys.readouterr().err
