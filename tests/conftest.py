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
# Without a GPU, the Triton kernels' tests run them in Triton's interpreter, on CPU tensors. Triton reads
# this when it is imported (the layer imports it on first use of those kernels, after this file): nothing
# else the suite runs on the CPU goes through Triton, so setting it costs the other tests nothing.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (the machine is shared); restored for other modules."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
