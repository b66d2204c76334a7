"""The time model against published GPU measurements no one here made (out of sample: nothing is fitted).

    .venv/bin/python scripts/time_model_published.py

Each figure names its source; the model's shape is the published model's config,
built on the meta device (no weights). Printed as Markdown rows for
docs/performance.md.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ohlora_fixtures.inputs import registry
from ohlora_fixtures.inputs.gpus import load_gpus
from ohlora_fixtures.measure.plan import fixed_widths, plan_candidate
from ohlora_fixtures.measure.step_time import gpu_rates, seconds


def llama(name: str, model_type: str, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int,
          intermediate: int) -> str:
    """A registry entry of a Llama-family shape (the published model's config.json values)."""
    architecture = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}[model_type]
    return f"""
[[candidate]]
name = "{name}"
hub_id = "published/{name}"
params_label = "?"
license = "other"
korean = "none"
model_type = "{model_type}"
architecture = "{architecture}"
target_modules = ["q_proj", "v_proj"]
[candidate.config]
vocab_size = {vocab}
hidden_size = {hidden}
num_hidden_layers = {layers}
num_attention_heads = {heads}
num_key_value_heads = {kv_heads}
intermediate_size = {intermediate}
"""


LLAMA2_7B = llama("Llama-2-7b", "llama", 32000, 4096, 32, 32, 32, 11008)
SHEARED_1_3B = llama("Sheared-LLaMA-1.3B", "llama", 32000, 2048, 24, 16, 16, 5504)
YI_6B = llama("Yi-6B", "llama", 64000, 4096, 32, 32, 4, 11008)
ZEPHYR_7B = llama("zephyr-7b-beta", "mistral", 32000, 4096, 32, 32, 8, 14336)
QUANTO = "huggingface/optimum-quanto PR #62 (2023-12-21), fp16 column"

# (label, source, registry TOML, card, dtype, prompt tokens, new tokens, measured seconds per new token)
DECODING = [
    ("Llama-2-7b-chat, HF transformers generate, batch 1", "InternLM/lmdeploy issue #210 (2023-08-08)",
     LLAMA2_7B, "A10", "float16", 20, 267, 0.034),
    # quanto's generation benchmark does not state its lengths here: a short prompt and 100 new tokens assumed.
    ("Sheared-LLaMA-1.3B, HF generate, batch 1", QUANTO, SHEARED_1_3B, "A10G", "float16", 10, 100, 0.021),
    ("Yi-6B, HF generate, batch 1", QUANTO, YI_6B, "A10G", "float16", 10, 100, 0.032),
    ("Llama-2-7b-hf, HF generate, batch 1", QUANTO, LLAMA2_7B, "A10G", "float16", 10, 100, 0.037),
    ("zephyr-7b-beta (Mistral), HF generate, batch 1", QUANTO, ZEPHYR_7B, "A10G", "float16", 10, 100, 0.038),
]


def main() -> int:
    table = load_gpus()
    print("| model and setting | card | source | est. s per token | published | error |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for label, source, toml, card, dtype, prompt, new, measured in DECODING:
            path = Path(folder) / "registry.toml"
            path.write_text(toml, encoding="utf-8")
            candidate = registry.load_registry(path)[0]
            plan = plan_candidate(candidate, (16,), dtype, 1, fixed_widths(prompt), max_new_tokens=new)
            gpu = table.select([card])[0]
            estimate = seconds(plan.decode_ops, gpu_rates(gpu, table, run_dtype=dtype))
            print(f"| {label} (prompt {prompt}, {new} new) | {card} | {source} | {estimate:.4f} | {measured:.4f} | "
                  f"{estimate / measured - 1:+.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
