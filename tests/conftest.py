"""Fixtures shared by test modules, and the kernels the suite's layers use."""

import os

import pytest
import torch

# The layer's default, "auto", compiles its kernels: a few seconds per input
# shape and process, which the suite's hundreds of tiny runs would pay over and
# over. Layers built here (and in the Ray workers and subprocesses the tests
# start, which inherit the environment) run eagerly unless a test asks for
# compiled or auto kernels by name; those paths have their own tests.
os.environ.setdefault("ONLINENORM_KERNELS", "eager")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (the machine is shared); restored for other modules."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
