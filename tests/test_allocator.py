"""retain_freed_memory: freed blocks are reused instead of page-faulting back in, measured in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MiB tensor: above glibc's largest dynamic mmap
# threshold (32 MiB), so by default every round maps fresh pages. Retained, the
# heap settles within a few rounds (measured: 5-6) and then reuses its pages.
FAULTS_PER_ROUND = """
import resource, sys, torch
from onlinenorm.training.allocator import retain_freed_memory
threshold = retain_freed_memory() if sys.argv[1] == "retain" else None
for _ in range(12):
    torch.empty(2**24).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(2**24).fill_(1.0)
print(threshold, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_round(mode: str, **env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ROUND, mode], capture_output=True, text=True, env=clean, check=True
    ).stdout.split()
    return out[0], float(out[1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_blocks_are_reused_instead_of_faulting_back_in():
    _, default = faults_per_round("default")
    threshold, retained = faults_per_round("retain")
    assert int(threshold) >= 2**25
    assert default > 10_000  # 64 MiB of fresh 4 KiB pages every round
    assert retained < default / 100


@pytest.mark.slow
def test_a_users_own_malloc_settings_are_left_alone():
    threshold, _ = faults_per_round("retain", MALLOC_TRIM_THRESHOLD_="1000000")
    assert threshold == "None"
