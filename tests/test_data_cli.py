"""``onlinenorm data``: synth, prepare, and clear errors."""

from __future__ import annotations

import pytest

from onlinenorm.cli import data as data_cli
from onlinenorm.cli import main
from onlinenorm.training.data import SYNTH_DEFAULTS


def test_formats_match_the_generator():
    assert tuple(SYNTH_DEFAULTS) == data_cli.FORMATS


@pytest.mark.parametrize(
    "fmt,expected",
    [
        ("cifar10", "cifar-10-batches-py/data_batch_5"),
        ("cifar100", "cifar-100-python/train"),
        ("imagefolder", "val/n00000002"),
        ("imagenet-npz", "train_data_batch_1.npz"),
    ],
)
def test_synth_writes_each_format(tmp_path, capsys, fmt, expected):
    options = ["--classes", "3", "--image-size", "16"] if fmt in ("imagefolder", "imagenet-npz") else []
    assert (
        main(["data", "synth", "--format", fmt, "--out", str(tmp_path), "--train", "12", "--test", "6", *options]) == 0
    )
    assert (tmp_path / expected).exists()
    assert "wrote 12 training and 6 test images" in capsys.readouterr().out


def test_prepare_summarizes_and_builds_the_cache(tmp_path, capsys):
    main(
        [
            "data",
            "synth",
            "--format",
            "imagefolder",
            "--out",
            str(tmp_path),
            "--train",
            "8",
            "--test",
            "4",
            "--classes",
            "2",
        ]
    )
    config = tmp_path / "config.yaml"
    config.write_text("dataset: imagefolder\nimage_size: 16\n")
    assert main(["data", "prepare", "--config", str(config), "--data-dir", str(tmp_path)]) == 0
    assert "8 training and 4 validation images of shape (3, 16, 16), 2 classes" in capsys.readouterr().out
    assert list((tmp_path / ".onlinenorm-cache").glob("*.npy"))


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "synth", "--format", "cifar10", "--out", str(tmp_path), "--classes", "5"]) == 2
    assert "exactly 10 classes" in capsys.readouterr().err
    assert main(["data", "prepare", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none")]) == 2
    assert "onlinenorm data synth --format cifar100" in capsys.readouterr().err
