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


def _training_steps() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    optimizer = torch.optim.AdamW(model.parameters())
    for _ in range(2):
        model(torch.randn(16, 32)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_the_lean_profile_records_what_the_full_one_records() -> None:
    """No operator is recorded (a record-function scope nothing enters), and yet every allocation is: the same
    sizes in the same order as the same profiler recording every operator, as torch.profiler.profile does."""
    _training_steps()  # one-off allocations (AdamW's imports, thread pools) before either recording
    torch_compat.start_allocation_profile()
    try:
        _training_steps()
    finally:
        lean = torch_compat.stop_allocation_profile()
    torch.autograd._prepare_profiler(torch_compat._CONFIG, torch_compat._ACTIVITIES)
    torch.autograd._enable_profiler(torch_compat._CONFIG, torch_compat._ACTIVITIES)  # every scope
    try:
        _training_steps()
    finally:
        full = torch.autograd._disable_profiler()
    assert len(lean) > 50
    assert lean == torch_compat._allocation_sizes(full)
    assert len(full.events()) > len(lean)  # the full recording also holds the operators


def test_the_lean_profile_holds_no_operator() -> None:
    torch_compat.start_allocation_profile()
    try:
        _training_steps()
    finally:
        result = torch.autograd._disable_profiler()
    names = {event.name() for event in result.events()}
    assert names == {"[memory]"}
