"""``onlinenorm bench layer`` runs end to end and prints its ratio table (no timing asserted)."""

import pytest

from onlinenorm.cli import main


def test_bench_layer_prints_ratio_table(capsys):
    assert main(["bench", "layer", "--shape", "3x2x5x5", "--shape", "2x4x3x3", "--kernels", "eager",
                 "--rounds", "2", "--oracle-rounds", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()[1:]
    assert header.split() == ["shape", "BN", "ms", "ac", "ms", "ac/BN", "ls/BN", "none/BN", "ac/ls", "loop/ac"]
    assert len(rows) == 2 and rows[0].startswith("(3, 2, 5, 5)") and rows[1].startswith("(2, 4, 3, 3)")
    for row in rows:
        ratios = [float(cell.rstrip("x")) for cell in row.split(")")[1].split()]
        assert len(ratios) == 7 and all(r > 0 for r in ratios)


@pytest.mark.slow
def test_bench_layer_times_compiled_kernels_beside_eager(capsys):
    assert main(["bench", "layer", "--shape", "4x3x5x5", "--rounds", "1", "--oracle-rounds", "0",
                 "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-4:] == ["none*/BN", "ac/ls", "ac*/ls", "loop/ac"]
    assert lines[-1].startswith("* = kernels='compiled'")


def test_bench_layer_rejects_unknown_kernels(capsys):
    assert main(["bench", "layer", "--kernels", "eager,fast"]) == 2
    assert capsys.readouterr().err.strip() == (
        "onlinenorm bench: error: --kernels must list some of eager, compiled; got 'eager,fast'")


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
