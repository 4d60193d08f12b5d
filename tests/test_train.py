"""One training run: config validation, learning, metrics, clamping, resume, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from onlinenorm.constants import METRICS
from onlinenorm.layers import _OnlineNorm
from onlinenorm.training.config import validate_config
from onlinenorm.training.data import write_synthetic
from onlinenorm.training.train import TIMING_METRICS, Trainer, load_data, run

pytestmark = pytest.mark.usefixtures("one_thread")


METRIC_KEYS = set(METRICS)
# Small enough for a shared 2-core machine: 500 images of 32x32, batch 10, one thread.
# alpha_fwd 0.99 lets the streaming statistics settle within the first epoch's 500 samples.
# Parameter-free shortcuts: the learning floors below were measured with them (with the recipe's
# projections, group/layer/instance/none norms stay near chance for longer than two epochs here).
TINY = {
    "dataset": "cifar10",
    "shortcut": "pad",
    "epochs": 2,
    "batch_size": 10,
    "lr": 0.02,
    "milestones": [],
    "alpha_fwd": 0.99,
    "alpha_bkw": 0.9,
    "ecm": "ac",
    "threads": 1,
    "device": "cpu",
    "seed": 0,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Enough data to learn from in two epochs."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic("cifar10", root, num_train=500, num_test=200, seed=0)
    return str(root)


@pytest.fixture(scope="module")
def large_dir(tmp_path_factory):
    """Enough data for instance norm's 2 epochs to get past its plateau (see CASES)."""
    root = tmp_path_factory.mktemp("synthetic-large")
    write_synthetic("cifar10", root, num_train=2000, num_test=500, seed=0)
    return str(root)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """Enough data to exercise the mechanics (clamping, checkpoints, divergence)."""
    root = tmp_path_factory.mktemp("synthetic-small")
    write_synthetic("cifar10", root, num_train=60, num_test=30, seed=0)
    return str(root)


def train(config, **kwargs):
    rows = []
    run(config, lambda metrics, checkpoint: rows.append(dict(metrics, checkpoint=checkpoint)), **kwargs)
    return rows


class Interrupted(Exception):
    pass


def interrupted_then_resumed(config, crash_epoch, folder):
    """The rows of a run interrupted after ``crash_epoch`` and resumed from that epoch's checkpoint."""
    rows = []

    def crash_after_epoch(metrics, checkpoint):
        rows.append(dict(metrics, checkpoint=checkpoint))
        if metrics["epoch"] == crash_epoch:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(config, crash_after_epoch, checkpoint_dir=folder)
    return rows + train(config, checkpoint_dir=folder, resume_from=rows[-1]["checkpoint"])


def comparable(row):
    """A row without what differs between identical runs (timings, checkpoint folders)."""
    return {k: v for k, v in row.items() if k not in TIMING_METRICS and k != "checkpoint"}


@pytest.mark.parametrize(
    "config,message",
    [
        ({"nrom": "batch"}, "unknown config key 'nrom' (did you mean 'norm'?)"),
        ({"norm": "bn"}, "'norm' must be one of online, batch, group, layer, instance, none, got 'bn'"),
        ({"alpha_fwd": 1.0}, "'alpha_fwd' must be null or a number in (0.0, 1.0)"),
        ({"clamp_value": 0}, "'clamp_value' must be a number in (0.0, inf)"),
        ({"clamp_value": None}, "'clamp_value' must be a number in (0.0, inf), got None"),
        ({"clamp_value": float("inf")}, "'clamp_value' must be a number in (0.0, inf), got inf"),
        ({"norm": None}, "'norm' must be one of online, batch, group, layer, instance, none, got None"),
        ({"batch_size": 1.5}, "'batch_size' must be null or an integer >= 2"),
        ({"epochs": True}, "'epochs' must be null or an integer >= 1"),
        ({"subset": 1.5}, "'subset' must be null or a fraction in (0, 1] or a per-class count >= 1"),
        ({"milestones": [5, 3]}, "'milestones' must be null or a strictly ascending list"),
        ({"device": "tpu"}, "'device' must be auto, cpu, cuda or cuda:N"),
        ({"norm": "group", "group_size": 32}, "'group_size' does not fit model 'resnet20'"),
        ({"model": "mlp", "norm": "instance"}, "'norm' must not be 'instance' for model 'mlp'"),
    ],
)
def test_bad_configs_name_the_key_and_the_allowed_values(config, message):
    with pytest.raises(ValueError) as err:
        validate_config(config)
    assert message in str(err.value)


# Layer norm and no normalization learn faster here with a smaller step.
# Instance norm standardizes every channel of every image, so at
# initialization its pooled features barely depend on the input, and it sits
# on a plateau before it learns. The pad-and-crop augmentation's zero-filled
# borders of random width are a per-image nuisance in exactly the statistics
# it divides out, and lengthen the plateau. Measured on 2000 images at batch
# 32, lr 0.05: with augmentation, train accuracy 0.1 for 3 epochs (190 steps),
# then 0.83 by epoch 10; without, val_acc after 2 epochs 0.52, 0.87, 0.59 for
# seeds 0, 1, 2. So its 2 epochs are those, without augmentation.
LARGE = {"data": "large_dir", "batch_size": 32, "lr": 0.05, "augment": False}
CASES = {
    "batch": ({"norm": "batch"}, 0.3),
    "online-ac": ({"norm": "online", "ecm": "ac"}, 0.3),
    "online-ls": ({"norm": "online", "ecm": "ls"}, 0.3),
    "group": ({"norm": "group"}, 0.3),
    "layer": ({"norm": "layer", "lr": 0.01}, 0.3),
    "instance": ({"norm": "instance", **LARGE}, 0.3),
    "none": ({"norm": "none", "lr": 0.01}, 0.2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_resnet20_learns_with_each_normalizer(request, case):
    overrides, floor = CASES[case]
    overrides = dict(overrides)
    data_dir = request.getfixturevalue(overrides.pop("data", "data_dir"))
    rows = train({**TINY, "data_dir": data_dir, **overrides})
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert set(row) >= METRIC_KEYS and row["diverged"] is False
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    last = rows[-1]
    assert last["val_acc"] > floor, f"{case}: val_acc {last['val_acc']:.3f} (chance 0.1)"
    clamping = overrides.get("ecm") == "ac"
    layer_keys = [k for k in last if k.startswith("clamp_fraction/")]
    assert bool(layer_keys) == clamping and (last["clamp_fraction"] > 0) == clamping
    if not clamping:
        assert last["val_acc_unclamped"] == last["val_acc"]


@pytest.mark.slow
def test_clamp_fraction_grows_as_the_clamp_shrinks(small_dir):
    fractions = []
    for clamp_value in (3.0, 1.5, 0.75):
        config = {**TINY, "data_dir": small_dir, "epochs": 1, "clamp_value": clamp_value}
        fractions.append(train(config)[-1]["clamp_fraction"])
    assert 0 < fractions[0] < fractions[1] < fractions[2] < 1


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(small_dir, tmp_path):
    # milestones=[2]: the resumed epoch 3 must also restore the lr schedule.
    config = {**TINY, "data_dir": small_dir, "epochs": 3, "milestones": [2]}
    full = train(config, checkpoint_dir=tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["epoch_0003"]  # keeps the latest

    rows = interrupted_then_resumed(config, 2, tmp_path / "part")
    assert [comparable(r) for r in rows] == [comparable(r) for r in full]
    assert rows[-1]["lr"] == pytest.approx(0.002)


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_experiment(small_dir, tmp_path):
    config = {**TINY, "data_dir": small_dir, "epochs": 1}
    checkpoint = train(config, checkpoint_dir=tmp_path)[-1]["checkpoint"]
    with pytest.raises(ValueError, match=r"different config \(lr: 0.02 -> 0.03\)"):
        train({**config, "lr": 0.03, "epochs": 2}, resume_from=checkpoint)


@pytest.mark.slow
def test_non_finite_loss_ends_the_run_with_diverged(small_dir):
    config = {**TINY, "data_dir": small_dir, "epochs": 3, "norm": "none", "lr": 1e6}
    rows = train(config)
    last = rows[-1]
    assert last["diverged"] is True and len(rows) == 1 and last["checkpoint"] is None
    assert set(last) == METRIC_KEYS | {"checkpoint"} and math.isnan(last["val_acc"])  # no layer clamps: no more keys


def test_bench_train_rows_and_table():
    from onlinenorm.bench.train import bench_train, format_train_table

    rows = bench_train(batch_size=4, steps=1, rounds=1, warmup=0, image_size=8, norms=("batch", "online-ac", "group"))
    assert [r["variant"] for r in rows] == ["batch", "online-ac", "group"]
    assert rows[0]["ratio"] == 1.0 and all(r["step_ms"] > 0 for r in rows)
    table = format_train_table(rows)
    assert "online-ac" in table and "1.00x" in table


@pytest.mark.slow
def test_mlp_and_imagefolder_resnet18_runs(small_dir, tmp_path):
    mlp = train({**TINY, "data_dir": small_dir, "model": "mlp", "epochs": 1})[-1]
    assert "clamp_fraction/layers.2" in mlp and math.isfinite(mlp["val_loss"])  # OnlineNorm1d after layers.1
    write_synthetic("imagefolder", tmp_path, num_train=16, num_test=8, num_classes=4, image_size=16)
    config = {**TINY, "dataset": "imagefolder", "data_dir": str(tmp_path), "image_size": 16, "model": "resnet18"}
    rows = train({**config, "epochs": 1, "batch_size": 8, "classes": 3})
    assert set(rows[-1]) >= METRIC_KEYS and math.isfinite(rows[-1]["val_loss"])


def trainer(config):
    config = validate_config(config)
    return Trainer(config, load_data(config), torch.device("cpu"))


def test_lr_warmup_steps_are_exact_per_step_and_per_epoch(small_dir):
    # 60 images at batch 10: 6 steps per epoch; warm-up over 2 epochs = 12 steps; lr x 0.1 after epoch 3
    config = {**TINY, "data_dir": small_dir, "model": "mlp", "lr": 0.1, "lr_warmup_epochs": 2, "milestones": [3]}
    session = trainer(config)
    used = []
    session.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    epoch_lrs = [session.train_epoch(epoch, None)["lr"] for epoch in (1, 2, 3, 4)]
    assert used == [0.1 * ((0.1 if k >= 18 else 1.0) * min(1.0, (k + 1) / 12)) for k in range(24)]
    assert used[:12] == pytest.approx([0.1 * k / 12 for k in range(1, 13)], rel=1e-15)
    assert epoch_lrs == [used[5], used[11], used[17], used[23]] == pytest.approx([0.05, 0.1, 0.1, 0.01])


def test_decay_norm_params_false_exempts_exactly_the_normalization_weights_and_biases(small_dir):
    session = trainer(
        {**TINY, "data_dir": small_dir, "shortcut": "projection", "weight_decay": 1e-4, "decay_norm_params": False}
    )
    names = {id(p): n for n, p in session.model.named_parameters()}
    decayed, exempt = ({names[id(p)] for p in group["params"]} for group in session.optimizer.param_groups)
    assert [g["weight_decay"] for g in session.optimizer.param_groups] == [1e-4, 0.0]
    norm_names = {
        f"{m}.{p}"
        for m, module in session.model.named_modules()
        if isinstance(module, _OnlineNorm)
        for p in ("weight", "bias")
    }
    assert exempt == norm_names and "blocks.3.shortcut.1.weight" in exempt  # the projection shortcut's norm too
    assert decayed == set(names.values()) - norm_names and {"fc.weight", "fc.bias", "conv.weight"} <= decayed
    everything = trainer({**TINY, "data_dir": small_dir, "weight_decay": 1e-4, "decay_norm_params": True})
    assert len(everything.optimizer.param_groups) == 1


def test_stats_warmup_settles_the_statistics_and_leaves_the_weights_alone(small_dir):
    session = trainer({**TINY, "data_dir": small_dir})
    layers = [m for m in session.model.modules() if isinstance(m, _OnlineNorm)]
    weights = {k: v.clone() for k, v in session.model.named_parameters()}
    rng = torch.get_rng_state()
    session.warm_up_statistics(8)  # more than an epoch's 6 batches: epoch 0's order, repeated
    assert all(not torch.equal(layer.mu, torch.zeros_like(layer.mu)) for layer in layers)
    assert all(not torch.equal(layer.var, torch.ones_like(layer.var)) for layer in layers)
    assert all(torch.equal(weights[k], v) for k, v in session.model.named_parameters())
    assert all(p.grad is None for p in session.model.parameters()) and not session.optimizer.state
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.slow
def test_warmups_change_the_run_and_resume_reproduces_it(small_dir, tmp_path):
    config = {
        **TINY,
        "data_dir": small_dir,
        "model": "mlp",
        "epochs": 3,
        "lr_warmup_epochs": 2,
        "stats_warmup_batches": 4,
    }
    full = train(config, checkpoint_dir=tmp_path / "full")

    rows = interrupted_then_resumed(config, 1, tmp_path / "part")  # interrupted inside the lr warm-up
    assert [comparable(r) for r in rows] == [comparable(r) for r in full]
    assert [r["lr"] for r in full] == [0.01, 0.02, 0.02]
    without = train({**config, "epochs": 1, "stats_warmup_batches": 0})
    assert without[0]["train_loss"] != full[0]["train_loss"]  # the statistics warm-up took effect
