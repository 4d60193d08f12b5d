"""``onlinenorm bench layer`` runs end to end and prints its ratio table (no timing asserted)."""

import math
import re

import pytest
import torch

import onlinenorm
from onlinenorm.bench.layer import (
    bench_layer,
    ecm_kernel_costs,
    median_interval,
    paired_difference,
    paired_ratio,
    saved_bytes_per_element,
    settle,
    time_interleaved,
)
from onlinenorm.cli import main


def run_bench_layer(capsys, options: str) -> str:
    """``onlinenorm bench layer OPTIONS --threads 1``, which must succeed: what it printed."""
    assert main(["bench", "layer", *options.split(), "--threads", "1"]) == 0
    return capsys.readouterr().out


def table_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[3:]]


def test_bench_layer_prints_ratio_table(capsys):
    lines = run_bench_layer(
        capsys, "--shape 3x2x5x5 --shape 2x4x3x3 --kernels eager --rounds 2 --oracle-rounds 1"
    ).splitlines()
    assert lines[1].split() == ["shape", "candidate", "ms", "x", "BN", "saved", "B/elem"]
    candidates = ["batchnorm", "ac", "ls", "none", "ls-autograd", "floor", "loop"]
    for start, shape in ((3, "(3, 2, 5, 5)"), (3 + len(candidates) + 3, "(2, 4, 3, 3)")):
        block = lines[start : start + len(candidates)]
        assert block[0].startswith(shape)
        assert [row.split()[-4] for row in block] == candidates
        # the floor is a copy and an add: at these toy shapes under 0.005 ms, printed as 0.00
        assert all(float(row.split()[-3]) > 0 and float(row.split()[-2]) > 0 for row in block if "floor" not in row)
        assert float(block[0].split()[-2]) == 1.0  # batch norm against itself
        floor = dict(re.findall(r"(\S+) ([\d.]+)", lines[start + len(candidates)].strip().removeprefix("x floor: ")))
        assert list(floor) == ["batchnorm", "ac", "ls", "none", "ls-autograd"]  # each candidate's time over the floor
        assert all(float(ratio) > 0 for ratio in floor.values())
        summary = lines[start + len(candidates) + 1]
        assert "ac/ls " in summary and "ac/ls-autograd " in summary and "loop/fastest ac " in summary
        low, middle, high = map(float, re.search(r"ac/ls ([\d.]+) \[([\d.]+)-([\d.]+)\]", summary).group(2, 1, 3))
        assert 0 < low <= middle <= high
        assert re.fullmatch(r"clamped at c=5: ac [\d.e+-]+", lines[start + len(candidates) + 2].strip())
    assert lines[-3].startswith("floor = y.copy_(x) then torch.add(x, dy, out=dx)")
    assert lines[-2].startswith("a/b m [lo-hi] = median of the per-round time ratios, with its 95% confidence")
    assert lines[-1].startswith("C kernels over none = what each ECM adds")
    assert not any(line.strip().startswith("C kernels over none:") for line in lines)  # native not timed


def test_rounds_shuffle_the_order_so_each_candidate_follows_each_other():
    order = []
    samples = time_interleaved(
        {name: (lambda name=name: order.append(name)) for name in "abc"},
        rounds=60,
        device=torch.device("cpu"),
        warmup=0,
    )
    rounds = ["".join(order[i : i + 3]) for i in range(0, len(order), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    # within rounds, every ordered pair occurs: no candidate always comes after the same one
    followers = {(r[i], r[i + 1]) for r in rounds for i in range(2)}
    assert followers == {(p, q) for p in "abc" for q in "abc" if p != q}
    assert {name: len(times) for name, times in samples.items()} == {"a": 60, "b": 60, "c": 60}
    again = []
    time_interleaved(
        {name: (lambda name=name: again.append(name)) for name in "abc"},
        rounds=60,
        device=torch.device("cpu"),
        warmup=0,
    )
    assert again == order  # seeded: a rerun times in the same order


def test_paired_ratio_gives_the_median_and_its_confidence_interval():
    # n = 100: ranks floor(50 - 9.8) = 40 and ceil(1 + 50 + 9.8) = 61 (1-based)
    ratios = [float(i) for i in range(1, 101)]
    assert paired_ratio(ratios, [1.0] * 100) == (40.0, 50.5, 61.0)
    assert paired_ratio([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == (1.0, 2.0, 3.0)  # few rounds: the whole range
    assert paired_ratio([2.0], [4.0]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_median_interval_and_paired_difference_use_the_same_order_statistics():
    values = [float(i) for i in range(100, 0, -1)]  # unsorted on purpose
    assert median_interval(values) == (40.0, 50.5, 61.0)
    assert paired_difference([v + 3.0 for v in values], [3.0] * 100) == (40.0, 50.5, 61.0)
    assert paired_difference([1.0, 5.0, 2.0], [2.0, 1.0, 2.0]) == (-1.0, 0.0, 4.0)
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_ecm_kernel_costs_time_each_ecm_against_none_in_the_c_kernels():
    x, grad_out = (torch.randn(4, 3, 5, 5) * 2 + 1).requires_grad_(True), torch.randn(4, 3, 5, 5)
    costs = ecm_kernel_costs(x, grad_out, rounds=5, clamp_value=0.5)
    assert set(costs) == {"ac", "ls", "ls-ac"}
    for low, middle, high in costs.values():
        assert low <= middle <= high and all(math.isfinite(v) for v in (low, middle, high))
    assert x.grad is None  # plain kernel calls: no autograd


@pytest.mark.slow
def test_bench_layer_prints_the_ecm_costs_where_it_times_the_c_kernels(capsys):
    lines = run_bench_layer(
        capsys, "--shape 3x2x5x5 --kernels native --rounds 2 --oracle-rounds 0 --ecm-rounds 3"
    ).splitlines()
    (line,) = [line.strip() for line in lines if line.strip().startswith("C kernels over none:")]
    number = r"[+-]\d+ us \[[+-]\d+, [+-]\d+\]"
    assert re.fullmatch(rf"C kernels over none: ac {number}, ls {number}; ls beyond ac {number}", line)
    (result,) = bench_layer([(3, 2, 5, 5)], rounds=1, oracle_rounds=0, kernels=("native",), ecm_rounds=0)
    assert result["ecm_costs"] is None  # --ecm-rounds 0 skips it
    (result,) = bench_layer(
        [(3, 2, 5, 5)], rounds=1, oracle_rounds=0, kernels=("native",), ecm_rounds=2, dtype=torch.float64
    )
    assert result["ecm_costs"] is None  # the C kernels do not run float64


def test_bench_layer_rejects_negative_ecm_rounds(capsys):
    assert main(["bench", "layer", "--ecm-rounds", "-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "onlinenorm bench: error: --rounds must be >= 1, --oracle-rounds and --ecm-rounds >= 0"
    )


def test_settle_puts_the_state_at_the_inputs_channel_statistics():
    x = torch.randn(16, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 4
    module = torch.nn.Sequential(torch.nn.Identity(), onlinenorm.OnlineNorm2d(3))
    settle(module, x)
    torch.testing.assert_close(module[1].mu, x.mean((0, 2, 3)))
    torch.testing.assert_close(module[1].var, x.var((0, 2, 3), correction=0))


def test_bench_layer_reports_how_often_its_layers_clamped():
    """Settled on the input, y is about N(0, 1): c = 5 clamps next to nothing, c = 0.5 about 60%."""
    fractions = {}
    for c in (0.5, 5.0):
        (result,) = bench_layer([(8, 3, 6, 6)], rounds=2, oracle_rounds=0, kernels=("eager", "native"), clamp_value=c)
        assert result["clamp_value"] == c and set(result["clamped"]) == {"ac", "ac+"}
        fractions[c] = result["clamped"]
    assert all(0.5 < f < 0.75 for f in fractions[0.5].values())
    assert all(f < 1e-3 for f in fractions[5.0].values())


def test_bench_layer_rejects_a_bad_clamp_value(capsys):
    assert main(["bench", "layer", "--clamp-value", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "onlinenorm bench: error: --clamp-value must be a positive, finite number; got 0.0"
    )


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
    lines = run_bench_layer(capsys, "--shape 4x3x5x5 --rounds 1 --oracle-rounds 0 --ecm-rounds 2").splitlines()
    assert [line.split()[-4] for line in lines[3:15]] == [
        "batchnorm",
        "ac",
        "ls",
        "none",
        "ac*",
        "ls*",
        "none*",
        "ac+",
        "ls+",
        "none+",
        "ls-autograd",
        "floor",
    ]
    assert lines[15].strip().startswith("x floor: batchnorm ")
    assert "ac*/ls* " in lines[16] and "ac+/ls+ " in lines[16]
    assert re.fullmatch(r"clamped at c=5: ac \S+, ac\* \S+, ac\+ \S+", lines[17].strip())
    assert lines[18].strip().startswith("C kernels over none: ac ")
    assert lines[-4].startswith("* = kernels='compiled'")


def test_bench_layer_rejects_unknown_kernels(capsys):
    assert main(["bench", "layer", "--kernels", "eager,fast"]) == 2
    assert capsys.readouterr().err.strip() == (
        "onlinenorm bench: error: --kernels must list some of eager, compiled, native, triton; got 'eager,fast'"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--shape", "3x2x5"], "shape must be four positive sizes"),
        (["--shape", "axbxcxd"], "shape must look like 128x16x32x32"),
    ],
)
def test_bench_layer_rejects_bad_shapes(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "layer", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["layer", "train"])
def test_bench_rejects_cuda_without_device(kind, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", kind, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onlinenorm bench: error: --device cuda asked for, but torch sees no CUDA device; use --device cpu"]


@pytest.mark.parametrize("kind", ["layer", "train"])
def test_bench_rejects_unknown_devices(kind, capsys):
    assert main(["bench", kind, "--device", "gpu"]) == 2
    assert capsys.readouterr().err == (
        "onlinenorm bench: error: --device must be cpu or cuda (cuda:N for one of several GPUs); got 'gpu'\n"
    )


def test_bench_layer_rejects_unknown_dtypes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "layer", "--dtype", "float32,int8"])
    assert exit_info.value.code == 2
    assert "dtype must list some of float32, bfloat16, float16; got 'float32,int8'" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_layer_times_each_dtype_in_turn_with_the_triton_kernels(capsys):
    """--dtype takes a list, one table each; kernels "triton" is a candidate (here in Triton's interpreter)."""
    pytest.importorskip("triton")
    out = run_bench_layer(
        capsys, "--shape 2x2x3x3 --kernels triton --dtype float32,bfloat16 --rounds 1 --oracle-rounds 0"
    )
    headers = [line for line in out.splitlines() if line.startswith("torch ")]
    assert [header.split(", ")[2] for header in headers] == ["dtype float32", "dtype bfloat16"]
    for table in out.split("torch ")[1:]:
        candidates = [line.split()[-4] for line in table.splitlines()[3:9]]
        assert candidates == ["batchnorm", "ac^", "ls^", "none^", "ls-autograd", "floor"]
        assert "ac^/ls^ " in table


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
