"""The dataset of a sweep, prepared once per node before any trial starts.

Synthetic data is generated on first use into the spec's ``data_dir`` (into a
private folder, then renamed, so racing processes on a shared filesystem
never see a half-written dataset); every dataset is then loaded once, which
builds the ImageFolder cache and fails early, with the loader's message, when
the data is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def ensure_synthetic(data_config: Mapping[str, Any], synthetic: Mapping[str, int]) -> bool:
    """Write the synthetic dataset unless ``data_dir`` exists; True when this call wrote it."""
    from onlinenorm.training.data import write_synthetic

    root = Path(data_config["data_dir"])
    if root.exists():
        return False
    private = root.with_name(f"{root.name}.partial-{socket.gethostname()}-{os.getpid()}")
    write_synthetic(
        data_config["dataset"],
        private,
        num_train=synthetic["train"],
        num_test=synthetic["test"],
        seed=synthetic["seed"],
    )
    try:
        os.rename(private, root)
    except OSError:  # another process renamed its copy first; both copies are identical
        shutil.rmtree(private, ignore_errors=True)
        return False
    return True


def prepare_data(data_config: Mapping[str, Any], synthetic: Mapping[str, int] | None) -> str:
    """Generate (if synthetic) and load the dataset on this node; a one-line description."""
    from onlinenorm.training.config import validate_config
    from onlinenorm.training.train import load_data

    if synthetic is not None:
        ensure_synthetic(data_config, synthetic)
    data = load_data(validate_config(data_config))
    return (
        f"{socket.gethostname()}: {data_config['dataset']} at {data_config['data_dir']}, "
        f"{len(data.train)} training and {len(data.val)} validation images"
    )


def prepare_on_every_node(data_config: Mapping[str, Any], synthetic: Mapping[str, int] | None) -> list[str]:
    """Run :func:`prepare_data` once on every alive node of the connected Ray cluster that has CPUs.

    A node that leaves the cluster meanwhile is skipped (a trial on a node that joins later generates
    missing synthetic data itself); an error of the preparation itself is raised."""
    import ray
    from ray.exceptions import NodeDiedError, TaskUnschedulableError, WorkerCrashedError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(prepare_data)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
    pending = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            data_config, synthetic
        )
        for node in nodes
    ]
    lines = []
    for ref in pending:
        try:
            lines.append(ray.get(ref))
        except (NodeDiedError, TaskUnschedulableError, WorkerCrashedError):
            continue
    return lines
