"""The gpu tier: CUDA paths (resume from a GPU checkpoint, mixed precision, pinned memory).

tests/conftest.py marks every test here `gpu` and, where torch sees no CUDA GPU, skips it with
NO_GPU as the reason (the run does not fail for that). Run the tier on a machine with a GPU:
`make test-gpu`.
"""

import pytest
import torch


@pytest.fixture
def cuda() -> torch.device:
    """The first CUDA device (tests here only run where one is visible)."""
    return torch.device("cuda")
