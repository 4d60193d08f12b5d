"""``onlinenorm bench sweep``: its trials and its figures (the timed run itself is `make bench`)."""

from __future__ import annotations

from sweeps.bench import SweepBench, bench_spec, format_sweep_bench


def test_bench_runs_a_few_demo_trials(tmp_path):
    spec = bench_spec(tmp_path)
    assert len(spec.trials) == 4 and spec.swept_keys == ["clamp_value"]
    assert all(t["model"] == "resnet20" and t["epochs"] == 2 and t["threads"] == 1 for t in spec.trials)
    assert spec.data_config["data_dir"] == str(tmp_path / "data")


def test_figures():
    bench = SweepBench(
        sequential_s=(10.0,) * 4,
        trial_s=(12.0,) * 4,
        concurrency=2,
        startup_s=5.0,
        sweep_s=30.0,
        trials="resnet20 on cifar10, 2 epochs each",
    )
    assert bench.efficiency == 48.0 / (25.0 * 2) and bench.speedup == 40.0 / 30.0
    text = format_sweep_bench(bench)
    assert "parallel efficiency       0.96" in text and "start-up overhead          5.0 s" in text
