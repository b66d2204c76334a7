"""The end-to-end tests' one fault plugin: `-p tests.e2e.faults`, steered by the OHLORA_FAULTS variable.

The product has no fault flag. This plugin wraps `ohlora_fixtures.session.runner.train` for the run it is
loaded in (from pytest_configure to pytest_unconfigure, so that an in-process pytester run leaves the test
process as it was) and does what OHLORA_FAULTS, a JSON object, asks:

- "ranks": {"RANK": [EXCEPTION, MESSAGE]}: that rank's `train` raises, after building what a real step holds
  (an optimizer and a loss graph); "hold_mib" more of real memory is allocated for the rank "hold_rank", and
  the process's RSS then written to the file "rss_at_failure";
- "released": a file: each `release_cached_memory` call appends whether the failed steps' optimizer and loss
  are gone and the adapter is off the base, one JSON line per failed step;
- "call": N and "action": at the N-th `train` call (on the CPU each fine-tune calls it twice: the untimed
  memory pass, then the timed round) "interrupt" raises KeyboardInterrupt as Ctrl-C does, "sigterm" sends the
  process SIGTERM as `timeout` does, "hang" touches the file "marker" and sleeps until killed.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
import weakref
from typing import Any

import pytest
import torch

from ohlora_fixtures.measure.finetune import has_adapter
from ohlora_fixtures.session import outcome, runner

ENV = "OHLORA_FAULTS"
EXCEPTIONS = {
    "OutOfMemoryError": torch.OutOfMemoryError, "MemoryError": MemoryError, "RuntimeError": RuntimeError,
    "ValueError": ValueError,
}
_patched = pytest.StashKey[pytest.MonkeyPatch]()


def faults(**spec: Any) -> dict[str, str]:
    """The environment that asks this plugin for `spec` (see the module's docstring)."""
    return {ENV: json.dumps(spec)}


def pytest_configure(config: pytest.Config) -> None:
    spec = json.loads(os.environ.get(ENV, "{}"))
    patch = config.stash[_patched] = pytest.MonkeyPatch()
    real_train, real_release = runner.train, outcome.release_cached_memory
    held: list[tuple[weakref.ref, weakref.ref, torch.nn.Module]] = []
    calls = 0

    def train(model, batches, learning_rate, device, on_step=None):  # runner.train's signature
        nonlocal calls
        calls += 1
        if calls == spec.get("call"):
            _act(spec)
        rank = model.peft_config["default"].r
        if str(rank) not in spec.get("ranks", {}):
            return real_train(model, batches, learning_rate, device, on_step)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
        loss = model(**batches[0]).loss
        held.append((weakref.ref(optimizer), weakref.ref(loss), model.get_base_model()))
        if rank == spec.get("hold_rank"):
            # What the failed step had allocated: held by this frame, which the exception's traceback keeps.
            step_memory = torch.ones(spec["hold_mib"] * 2**20 // 4)  # noqa: F841
            pathlib.Path("rss_at_failure").write_text(str(_rss_mib()), encoding="utf-8")
        name, message = spec["ranks"][str(rank)]
        raise EXCEPTIONS[name](message)

    def release(device):
        real_release(device)
        if "released" in spec:
            with open(spec["released"], "a", encoding="utf-8") as stream:
                for optimizer, loss, base in held:
                    facts = {"optimizer": optimizer() is not None, "loss": loss() is not None,
                             "adapter": has_adapter(base)}
                    stream.write(json.dumps(facts) + "\n")
        held.clear()

    patch.setattr(runner, "train", train)
    patch.setattr(outcome, "release_cached_memory", release)


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[_patched].undo()


def _act(spec: dict[str, Any]) -> None:
    action = spec["action"]
    if action == "interrupt":
        raise KeyboardInterrupt
    if action == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "hang":
        pathlib.Path(spec["marker"]).touch()
        time.sleep(600)


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        return next(float(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
