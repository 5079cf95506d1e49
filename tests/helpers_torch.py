"""Fixtures shared by the test modules that run tiny models through whole-scene prediction."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread for the module: on a small shared CPU box, two OpenMP threads that wait for each other make
    the tiny models tens of times slower; results do not depend on it (the multi-process tests rely on that too).
    A module uses it by importing it (``from helpers_torch import one_torch_thread``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
