"""Speed figures measured side by side in one process: candidates interleaved round by round in a shuffled order,
reported as the median over rounds and as ratios to a baseline."""

from __future__ import annotations

import argparse
import sys

from onlinenorm.cli import add_command, command_group
from onlinenorm.constants import KERNEL_CHOICES

DTYPES = ("float32", "bfloat16", "float16")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 128x16x32x32; got {text!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be four positive sizes N x C x H x W; got {text!r}")
    return shape


def _dtypes(text: str) -> tuple[str, ...]:
    dtypes = tuple(part.strip() for part in text.split(",") if part.strip())
    if not dtypes or any(d not in DTYPES for d in dtypes):
        raise argparse.ArgumentTypeError(f"dtype must list some of {', '.join(DTYPES)}; got {text!r}")
    return dtypes


@command_group(
    "bench",
    help="benchmarks: the layer and a training step against batch norm, sweep parallel efficiency, the report's speed",
    metavar="KIND",
)
def register(kinds) -> None:
    layer = add_command(kinds, "layer", run_layer)
    layer.add_argument(
        "--shape",
        type=_shape,
        action="append",
        metavar="NxCxHxW",
        help="input shape (repeatable); default: ResNet-20 shapes and one ResNet-50 shape",
    )
    layer.add_argument(
        "--rounds",
        type=int,
        default=25,
        metavar="N",
        help="timed rounds per candidate, median reported (default: %(default)s)",
    )
    layer.add_argument(
        "--oracle-rounds",
        type=int,
        default=3,
        metavar="N",
        help="rounds of the slow per-sample loop oracle, 0 skips it (default: %(default)s)",
    )
    layer.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu or cuda (default: %(default)s)")
    layer.add_argument(
        "--dtype",
        type=_dtypes,
        default=("float32",),
        metavar="DTYPE[,DTYPE]",
        help=f"comma-separated activation dtypes, each timed in turn: {', '.join(DTYPES)} (default: float32)",
    )
    layer.add_argument(
        "--kernels",
        default=None,
        metavar="LIST",
        help="comma-separated kernel choices to time: eager, compiled, native, triton "
        "(default: eager, compiled and native on the CPU; eager, compiled and triton on CUDA)",
    )
    layer.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice, one per core)",
    )
    layer.add_argument(
        "--ecm-rounds",
        type=int,
        default=200,
        metavar="N",
        help="rounds timing what each ECM adds to the C kernels, 0 skips it; needs native in --kernels "
        "(default: %(default)s)",
    )
    layer.add_argument(
        "--clamp-value",
        type=float,
        default=None,
        metavar="X",
        help="clamp value c of the ac layers (default: the layer's, the paper's 5)",
    )

    train = add_command(kinds, "train", run_train)
    train.add_argument("--model", default="resnet20", metavar="NAME", help="model (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=128, metavar="N", help="batch size (default: %(default)s)")
    train.add_argument(
        "--norms",
        default="batch,online-ac,online-ls",
        metavar="LIST",
        help="comma-separated variants: a norm name, or online-<ecm> (default: %(default)s)",
    )
    train.add_argument("--steps", type=int, default=5, metavar="N", help="steps per timed round (default: %(default)s)")
    train.add_argument(
        "--rounds", type=int, default=5, metavar="N", help="interleaved rounds, median reported (default: %(default)s)"
    )
    train.add_argument(
        "--kernels",
        choices=KERNEL_CHOICES,
        default=None,
        metavar="NAME",
        help=f"kernels of the online layers: {', '.join(KERNEL_CHOICES)} (default: ONLINENORM_KERNELS, else auto)",
    )
    train.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    train.add_argument(
        "--image-size",
        type=int,
        default=32,
        metavar="N",
        help="side of the random square input images (default: 32, CIFAR's; 224 for ImageNet's)",
    )
    train.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda or cuda:N (default: %(default)s)")

    sweep = add_command(kinds, "sweep", run_sweep, extra="sweep")
    sweep.add_argument("--cpus", type=int, default=None, metavar="N", help="CPUs of the embedded Ray (default: all)")

    report = add_command(kinds, "report", run_report, extra="analysis")
    report.add_argument(
        "--trials",
        type=int,
        default=1000,
        metavar="N",
        help="trials of the generated experiment (default: %(default)s)",
    )
    report.add_argument("--epochs", type=int, default=100, metavar="N", help="epochs per trial (default: %(default)s)")
    report.add_argument(
        "--layers",
        type=int,
        default=20,
        metavar="N",
        help="normalization layers reporting a clamp fraction (default: %(default)s)",
    )
    report.add_argument(
        "--rounds", type=int, default=3, metavar="N", help="rounds per stage, median reported (default: %(default)s)"
    )
    report.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="processes of the parallel chart stage (default: %(default)s)",
    )
    report.add_argument("--experiment", metavar="DIR", help="time this experiment directory instead of generating one")


def _set_up_machine(args) -> None:
    """Apply --threads, check --device (bad values are usage errors), and set the allocator as training does."""
    import torch

    from onlinenorm.cli import UsageError
    from onlinenorm.training.allocator import retain_freed_memory

    retain_freed_memory()

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        device_type = torch.device(args.device).type
    except RuntimeError:
        device_type = None
    if device_type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda (cuda:N for one of several GPUs); got {args.device!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")


def run_train(args) -> int:
    """Training-step time of a model per normalizer, relative to batch norm.

    Time whole training steps (forward, cross-entropy, backward, SGD step) of one model built with each normalizer,
    interleaved in a shuffled order, and print each one's median and best step time and its ratio to batch norm.
    """
    import os

    from onlinenorm.cli import UsageError
    from onlinenorm.constants import ECMS, MODELS, NORMS

    norms = tuple(n.strip() for n in args.norms.split(",") if n.strip())
    if min(args.batch_size, args.steps, args.rounds, args.image_size) < 1:
        raise UsageError("--batch-size, --steps, --rounds and --image-size must be >= 1")
    if args.model not in MODELS:
        raise UsageError(f"--model must be one of {', '.join(MODELS)}; got {args.model!r}")
    allowed = [n for n in NORMS if n != "online"] + [f"online-{ecm}" for ecm in ECMS]
    if not norms or any(n not in allowed for n in norms):
        raise UsageError(f"--norms must list some of {', '.join(allowed)}; got {args.norms!r}")
    _set_up_machine(args)
    if args.kernels:
        os.environ["ONLINENORM_KERNELS"] = args.kernels  # the default of every layer built from here on
    from onlinenorm.bench.train import bench_train, format_train_table

    rows = bench_train(
        model=args.model,
        batch_size=args.batch_size,
        steps=args.steps,
        norms=norms,
        rounds=args.rounds,
        image_size=args.image_size,
        device=args.device,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_train_table(rows))
    return 0


def run_sweep(args) -> int:
    """The same tiny trials sequentially and as a Ray Tune sweep: parallel efficiency, start-up.

    Run the same tiny trials once sequentially in this process and once as a Ray Tune sweep on an embedded Ray, and
    print the sweep's start-up time, parallel efficiency and speed-up.
    """
    from onlinenorm.cli import UsageError

    if args.cpus is not None and args.cpus < 1:
        raise UsageError(f"--cpus must be >= 1; got {args.cpus}")
    # sweeps is imported here, inside the handler: the dispatcher's lazy boundary.
    from sweeps.bench import bench_sweep, format_sweep_bench

    print(format_sweep_bench(bench_sweep(args.cpus)))
    return 0


def run_report(args) -> int:
    """The stages of `onlinenorm report` timed on a generated experiment (1,000 trials by default).

    Generate an experiment directory (or take --experiment), then time each stage of `onlinenorm report` on it
    (load, findings, charts, tables, Parquet) and the whole report in a fresh process, printing wall and CPU seconds
    per stage.
    """
    import os
    import tempfile
    from pathlib import Path

    from onlinenorm.cli import UsageError

    if min(args.trials, args.epochs, args.layers, args.rounds, args.workers) < 1:
        raise UsageError("--trials, --epochs, --layers, --rounds and --workers must be >= 1")
    if args.experiment is not None and not Path(args.experiment).is_dir():
        raise UsageError(f"--experiment {args.experiment}: no such directory")
    # analysis is imported here, inside the handler: the dispatcher's lazy boundary.
    from analysis.bench import bench_report, format_report_bench, write_experiment

    with tempfile.TemporaryDirectory(prefix="bench_report_") as scratch:
        if args.experiment is None:
            print(
                f"writing {args.trials} trials x {args.epochs} epochs x {args.layers} layers ...",
                file=sys.stderr,
                flush=True,
            )
            experiment = write_experiment(Path(scratch) / "experiment", args.trials, args.epochs, args.layers)
            size = sum(p.stat().st_size for p in experiment.glob("*/result.json")) / 1e6
            description = (
                f"generated experiment: {args.trials} trials x {args.epochs} epochs x {args.layers} "
                f"layers, {size:.0f} MB of result lines"
            )
        else:
            experiment = Path(args.experiment).resolve()
            description = f"experiment {experiment}"
        description += f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; median of {args.rounds} rounds"
        rows = bench_report(
            experiment,
            Path(scratch) / "out",
            rounds=args.rounds,
            workers=args.workers,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    print(format_report_bench(rows, description))
    return 0


def run_layer(args) -> int:
    """Forward+backward of OnlineNorm2d (each ECM) vs BatchNorm2d and the per-sample loop.

    Time forward + backward of one OnlineNorm2d layer per ECM and kernel choice against BatchNorm2d and the
    per-sample float64 loop, on settled layers; print each candidate's time, its ratio to batch norm, the bytes it
    saves for backward, and what each ECM adds to the C kernels.
    """
    import math

    import torch

    from onlinenorm.bench.layer import (
        DEFAULT_LAYER_KERNELS,
        DEFAULT_SHAPES,
        LAYER_KERNELS,
        bench_layer,
        format_layer_table,
    )
    from onlinenorm.cli import UsageError
    from onlinenorm.constants import DEFAULT_CLAMP_VALUE

    if args.rounds < 1 or args.oracle_rounds < 0 or args.ecm_rounds < 0:
        raise UsageError("--rounds must be >= 1, --oracle-rounds and --ecm-rounds >= 0")
    clamp_value = DEFAULT_CLAMP_VALUE if args.clamp_value is None else args.clamp_value
    if not 0 < clamp_value < math.inf:  # also refuses nan
        raise UsageError(f"--clamp-value must be a positive, finite number; got {args.clamp_value}")
    _set_up_machine(args)
    if args.kernels is None:
        kernels = DEFAULT_LAYER_KERNELS[torch.device(args.device).type]
    else:
        kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    if not kernels or any(k not in LAYER_KERNELS for k in kernels):
        raise UsageError(f"--kernels must list some of {', '.join(LAYER_KERNELS)}; got {args.kernels!r}")
    for dtype in args.dtype:
        print(
            f"torch {torch.__version__}, device {args.device}, dtype {dtype}, "
            f"{torch.get_num_threads()} threads; median of {args.rounds} rounds, each in a shuffled order",
            flush=True,
        )
        rows = bench_layer(
            args.shape or DEFAULT_SHAPES,
            rounds=args.rounds,
            device=args.device,
            dtype=getattr(torch, dtype),
            oracle_rounds=args.oracle_rounds,
            kernels=kernels,
            clamp_value=clamp_value,
            ecm_rounds=args.ecm_rounds,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
        print(format_layer_table(rows), flush=True)
    return 0
