"""What the CPU's quantized path costs against float32: one tiny stand-in, same process, process CPU time.

Fine-tuning: LoRA r8 on q_proj/v_proj-style targets, AdamW, STEPS steps of batch 4 x 64 tokens; generation:
32 new tokens, greedy, no early stop. Alternates precisions REPEATS times and prints median CPU seconds and the
ratio to float32, with the load average (the machine is shared). Usage: python scripts/quantized_cpu_cost.py
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from ohlora_fixtures.inputs.registry import DEFAULT_REGISTRY, load_registry
from ohlora_fixtures.measure.models import _from_config, build_config
from ohlora_fixtures.measure.quantize import guard_hub_kernels, quantize, quiet_casts

CANDIDATE, STEPS, REPEATS, NEW_TOKENS = "llama1B", 10, 3, 32


def _model(precision: str) -> torch.nn.Module:
    candidate = next(c for c in load_registry(DEFAULT_REGISTRY) if c.name == CANDIDATE)
    torch.manual_seed(0)
    model = _from_config(candidate, build_config(candidate, "tiny"), dtype=torch.float32)
    if precision != "none":
        model = quantize(model, precision, torch.device("cpu"), torch.float32)
    return model


def _costs(precision: str) -> tuple[float, float]:
    import peft

    model = _model(precision)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(1))
    start = time.process_time()
    for _ in range(STEPS):
        lora(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train = time.process_time() - start
    start = time.process_time()
    with torch.no_grad():
        lora.generate(input_ids=ids[:1, :16], max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return train, time.process_time() - start


def main() -> None:
    guard_hub_kernels(allow_remote_code=False)
    seen: dict[str, list[tuple[float, float]]] = {"none": [], "8bit": [], "4bit": []}
    with quiet_casts():
        for _ in range(REPEATS):
            for precision in seen:
                seen[precision].append(_costs(precision))
    base_train = statistics.median(t for t, _ in seen["none"])
    base_gen = statistics.median(g for _, g in seen["none"])
    print(f"{CANDIDATE} tiny stand-in, float32 compute, CPU seconds (process), median of {REPEATS}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}")
    for precision, costs in seen.items():
        train = statistics.median(t for t, _ in costs)
        gen = statistics.median(g for _, g in costs)
        print(f"  {precision:5s} {STEPS} FT steps {train:7.3f} s (x{train / base_train:.2f})   "
              f"{NEW_TOKENS} new tokens {gen:7.3f} s (x{gen / base_gen:.2f})")


if __name__ == "__main__":
    main()
