"""Every private torch call of the project, in one place, held to the torch release it is tested on.

The CPU tensor-peak meter (memory.py) needs each allocation and free of a region in order. The public
`torch.profiler.profile` records them too, but turns every record into a Python `FunctionEvent` at each
stop, which doubled the pass's time and memory; so the meter drives the autograd profiler's private entry
points underneath it instead. They are not a stable API: `ProfilerConfig` takes six positional booleans,
and `_prepare_profiler`, `_enable_profiler`, `_disable_profiler` and the result's event tree may change in
any release. setup.cfg therefore admits only the torch minor release tested here (TESTED_TORCH), and
tests/measure/test_torch_compat.py fails when a call below no longer works as used.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch._C import _profiler

TESTED_TORCH = "2.13"

_CPU = torch.autograd.DeviceType.CPU

# What torch.profiler.profile passes underneath: Kineto on the CPU, memory recorded, no shapes, no stacks,
# no FLOPs, no modules (ProfilerConfig(state, report_input_shapes, profile_memory, with_stack, with_flops,
# with_modules, experimental_config)); and, which the public API cannot ask for, one record-function scope
# that nothing here enters (the mobile lite interpreter's), so that no operator is recorded, only the
# allocator's reports, which do not pass through scopes. The same allocations in the same order
# (tests/measure/test_torch_compat.py); the default grid's 32 profiled passes took 4.6 s instead of 9.2 s.
_CONFIG = _profiler.ProfilerConfig(_profiler.ProfilerState.KINETO, False, True, False, False, False,
                                   _profiler._ExperimentalConfig())
_ACTIVITIES = {_profiler.ProfilerActivity.CPU}
_NO_OPERATORS = {_profiler.RecordScope.LITE_INTERPRETER}


def start_allocation_profile() -> None:
    """Start recording every CPU allocation and free of this process's tensors."""
    # Kineto, the profiler's backend, prints a "USDT: ... profiler_start/stop" line on stderr at every window
    # unless its log level (read when it first starts) is above its highest, 5; a level the user set is kept.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    torch.autograd._prepare_profiler(_CONFIG, _ACTIVITIES)
    torch.autograd._enable_profiler(_CONFIG, _ACTIVITIES, _NO_OPERATORS)


def stop_allocation_profile() -> list[int]:
    """Stop recording; the signed CPU allocation sizes (frees negative) since the start, in the order they happened."""
    return _allocation_sizes(torch.autograd._disable_profiler())


def _allocation_sizes(result: Any) -> list[int]:
    # The flat event list, not the event tree: the tree's walk took twice as long for the same allocations.
    events = [
        (event.start_ns(), event.nbytes())
        for event in result.events()
        if event.name() == "[memory]" and event.device_type() == _CPU
    ]
    events.sort(key=lambda timed: timed[0])
    return [size for _, size in events]
