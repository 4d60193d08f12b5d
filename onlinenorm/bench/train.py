"""Training-step time of a model under each normalizer, relative to batch norm.

A step is forward, cross-entropy, backward and an SGD update on a fixed
random batch (data loading excluded). Candidates are timed interleaved,
round by round in one process, so machine load drifts hit them alike; each
reports the median over rounds. ``onlinenorm bench train`` prints
:func:`format_train_table` of :func:`bench_train`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from onlinenorm.bench.layer import medians, time_interleaved
from onlinenorm.models import NORM_DIMS, create_model
from onlinenorm.norms import create_norm

DEFAULT_VARIANTS = ("batch", "online-ac", "online-ls")
BASELINE = "batch"
NUM_CLASSES = 10


def _variant_options(variant: str) -> dict[str, str]:
    """``"online-ac"`` -> ``{"norm": "online", "ecm": "ac"}``; ``"batch"`` -> ``{"norm": "batch"}``."""
    norm, _, ecm = variant.partition("-")
    return {"norm": norm, **({"ecm": ecm} if ecm else {})}


def _training_step(variant: str, model_name: str, batch_size: int, image_size: int, device: torch.device):
    torch.manual_seed(0)
    norm_layer = create_norm(dim=NORM_DIMS[model_name], **_variant_options(variant))
    model = create_model(model_name, NUM_CLASSES, norm_layer, (3, image_size, image_size)).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def bench_train(
    model: str = "resnet20",
    batch_size: int = 128,
    steps: int = 5,
    norms: Sequence[str] = DEFAULT_VARIANTS,
    rounds: int = 5,
    warmup: int = 2,
    image_size: int = 32,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time a training step of ``model`` under each normalizer variant, relative to batch norm.

    Each variant gets its own model (built after ``torch.manual_seed(0)``, for 10 classes), an SGD optimizer
    (lr 0.01, momentum 0.9) and one fixed random batch; a step is forward, cross-entropy, backward and the
    SGD update. The variants are timed interleaved, in an order shuffled each round
    (:func:`onlinenorm.bench.layer.time_interleaved`).

    Args:
        model: a model name of :data:`onlinenorm.models.MODELS`. Default: ``"resnet20"``
        batch_size: samples per step. Default: 128
        steps: steps per variant and round; a round's sample is their mean time. Default: 5
        norms: the variants, each ``"NORM"`` (a :func:`~onlinenorm.norms.create_norm` name, e.g.
            ``"batch"``) or ``"online-ECM"`` (the online layer with that ECM, e.g. ``"online-ac"``).
            Default: ``("batch", "online-ac", "online-ls")``
        rounds: timed rounds; each row reports the median and the best over them. Default: 5
        warmup: untimed steps of each variant before the first round. Default: 2
        image_size: height and width of the random 3-channel input images. Default: 32
        device: the device the models and the batch live on, e.g. ``"cpu"`` or ``"cuda"``. Default: ``"cpu"``
        progress: called with one status line before the timing starts; ``None`` prints nothing.
            Default: ``None``

    Returns:
        One row (a dict) per variant, in the order of ``norms``, with keys ``model``, ``variant``,
        ``batch_size``, ``device``, ``threads`` (``torch.get_num_threads()``), ``step_ms`` (median over
        ``rounds`` of the mean over ``steps``), ``step_ms_min`` (the best round), ``ratio`` (``step_ms`` /
        the batch-norm ``step_ms``, or ``nan`` when ``"batch"`` is not among ``norms``) and ``ratio_best``
        (the same for ``step_ms_min``: steadier than the median on a loaded machine).

    Raises:
        ValueError: an unknown model, normalizer or ECM name.
    """
    where = torch.device(device)
    candidates = {v: _training_step(v, model, batch_size, image_size, where) for v in norms}
    if progress is not None:
        progress(f"timing {', '.join(candidates)}: {rounds} rounds of {steps} steps")
    times = time_interleaved(candidates, rounds, where, warmup=warmup, calls_per_round=steps)
    middle = medians(times)
    bests = {v: min(t) for v, t in times.items()}
    nan = float("nan")
    return [
        {
            "model": model,
            "variant": v,
            "batch_size": batch_size,
            "device": device,
            "threads": torch.get_num_threads(),
            "step_ms": 1e3 * middle[v],
            "step_ms_min": 1e3 * bests[v],
            "ratio": middle[v] / middle.get(BASELINE, nan),
            "ratio_best": bests[v] / bests.get(BASELINE, nan),
        }
        for v in candidates
    ]


def format_train_table(rows: list[dict]) -> str:
    """Format :func:`bench_train`'s rows as a plain-text table.

    A header line (model, batch size, device and threads, from the first row), a line of column titles,
    then one line per row: variant, median and best step time in ms, and their ratios to batch norm.

    Args:
        rows: the rows :func:`bench_train` returned; at least one.

    Returns:
        The table, its lines joined by newlines (no trailing newline).
    """
    lines = [
        f"{rows[0]['model']}, batch {rows[0]['batch_size']}, {rows[0]['device']}, {rows[0]['threads']} threads",
        f"{'variant':<14}{'median ms':>10}{'best ms':>10}{'median/bn':>10}{'best/bn':>10}",
    ]
    lines += [
        f"{r['variant']:<14}{r['step_ms']:>10.1f}{r['step_ms_min']:>10.1f}{r['ratio']:>9.2f}x{r['ratio_best']:>9.2f}x"
        for r in rows
    ]
    return "\n".join(lines)
