"""Write synthetic datasets in the real file formats, fetch the official CIFAR archives, and load a dataset once to
build its cache and check it before a run or a sweep."""

from __future__ import annotations

import argparse

from onlinenorm.cli import add_command, command_group
from onlinenorm.constants import DATASETS

FORMATS = DATASETS  # every dataset format can be synthesized (onlinenorm.training.data.SYNTH_DEFAULTS; tested)


@command_group("data", help="datasets: synthetic data, downloads, caches")
def register(actions) -> None:
    synth = add_command(actions, "synth", run_synth)
    synth.add_argument(
        "--format", required=True, choices=FORMATS, metavar="NAME", help=f"file layout to write: {', '.join(FORMATS)}"
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="folder to write into (the dataset's data_dir)")
    synth.add_argument("--train", type=int, default=5000, metavar="N", help="training images (default 5000)")
    synth.add_argument("--test", type=int, default=1000, metavar="N", help="test/validation images (default 1000)")
    synth.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the class structure and the samples (default: %(default)s)",
    )
    synth.add_argument(
        "--classes", type=int, metavar="N", help="number of classes (imagefolder, imagenet-npz; default 10)"
    )
    synth.add_argument("--image-size", type=int, metavar="N", help="image side in pixels (imagefolder, imagenet-npz)")

    download = add_command(actions, "download", run_download)
    download.add_argument(
        "--dataset", required=True, choices=("cifar10", "cifar100"), metavar="NAME", help="cifar10 or cifar100"
    )
    download.add_argument("--out", required=True, metavar="DIR", help="folder to extract into (the dataset's data_dir)")

    prepare = add_command(actions, "prepare", run_prepare)
    prepare.add_argument("--config", metavar="FILE", help="YAML/JSON training config whose data keys to use")
    prepare.add_argument("--dataset", metavar="NAME", help="dataset name (overrides the config)")
    prepare.add_argument("--data-dir", metavar="DIR", help="dataset folder (overrides the config)")


def run_synth(args: argparse.Namespace) -> int:
    """Write a synthetic dataset in a real file format.

    Write a synthetic dataset with learnable class structure in one of the file layouts the training runs read
    (CIFAR pickles, an ImageFolder tree or ImageNet .npz files).
    """
    from onlinenorm.cli import UsageError
    from onlinenorm.training.data import DatasetError, write_synthetic

    if args.train < 1 or args.test < 1:
        raise UsageError("--train and --test must be at least 1")
    try:
        folder = write_synthetic(
            args.format,
            args.out,
            num_train=args.train,
            num_test=args.test,
            seed=args.seed,
            num_classes=args.classes,
            image_size=args.image_size,
        )
    except DatasetError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {args.train} training and {args.test} test images ({args.format}) to {folder}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Fetch and checksum-verify an official CIFAR archive.

    Download an official CIFAR archive, verify its checksum and extract it into --out.
    """
    from pathlib import Path

    from onlinenorm.cli import UsageError
    from onlinenorm.training.data import DatasetError
    from onlinenorm.training.data.download import download_archive

    try:
        download_archive(args.dataset, Path(args.out))
    except DatasetError as err:
        raise UsageError(str(err)) from None
    print(f"downloaded and verified {args.dataset} into {args.out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Load a dataset once (builds the ImageFolder cache) and print a summary; accepts the same data keys as a training
    config.

    Load a dataset once, as a training run would (building the ImageFolder cache), and print a summary. `onlinenorm
    config show` lists the data keys and their defaults.
    """
    from onlinenorm.cli import UsageError
    from onlinenorm.cli.train import read_config
    from onlinenorm.training.data import DatasetError
    from onlinenorm.training.train import load_data

    overrides = {"dataset": args.dataset, "data_dir": args.data_dir}
    config = read_config(args.config, {k: v for k, v in overrides.items() if v is not None})
    try:
        data = load_data(config)
    except DatasetError as err:
        raise UsageError(str(err)) from None
    print(
        f"{config['dataset']} at {config['data_dir']}: {len(data.train)} training and {len(data.val)} validation "
        f"images of shape {data.image_shape}, {data.num_classes} classes; "
        f"mean {tuple(round(m, 4) for m in data.mean)}, std {tuple(round(s, 4) for s in data.std)}"
    )
    return 0
