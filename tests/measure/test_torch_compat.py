"""The private torch calls (measure/torch_compat.py) still work as used: a change in torch fails here first."""

from __future__ import annotations

import torch

from ohlora_fixtures.measure import torch_compat


def test_the_tested_torch_release_is_the_one_installed() -> None:
    assert torch.__version__.startswith(torch_compat.TESTED_TORCH + "."), (
        f"torch {torch.__version__} is not the tested {torch_compat.TESTED_TORCH}: check torch_compat.py's calls, "
        "then the range in setup.cfg")


def test_the_allocation_profile_sees_one_tensor_come_and_go_in_order() -> None:
    size = 1 << 20
    torch_compat.start_allocation_profile()
    try:
        block = torch.empty(size, dtype=torch.uint8)
        del block
    finally:
        sizes = torch_compat.stop_allocation_profile()
    assert size in sizes and -size in sizes
    assert sizes.index(size) < sizes.index(-size)


def test_an_empty_profile_records_nothing() -> None:
    torch_compat.start_allocation_profile()
    assert torch_compat.stop_allocation_profile() == []
