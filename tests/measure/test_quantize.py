"""measure/quantize.py: the quantized base, the reason a precision cannot run, no kernel from the hub."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from ohlora_fixtures.measure import quantize

NEEDS_BITSANDBYTES = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed (the quantization extra)"
)


def test_full_precision_always_runs_and_a_missing_bitsandbytes_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert quantize.unavailable("none", cpu) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name))
    for precision in quantize.QUANTIZED:
        reason = quantize.unavailable(precision, cpu)
        assert reason and "\n" not in reason and "bitsandbytes" in reason and "[quantization]" in reason
    assert quantize.unavailable("none", cpu) is None


def test_the_hub_kernel_package_is_hidden_without_the_remote_code_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)  # as before bitsandbytes' first import
    before = sys.modules.get("kernels", ...)
    with quantize._no_hub_kernels(allow_remote_code=False):
        with pytest.raises(ImportError):
            from kernels import get_kernel  # noqa: F401
    assert sys.modules.get("kernels", ...) is before
    with quantize._no_hub_kernels(allow_remote_code=True):
        assert sys.modules.get("kernels", ...) is before


def _tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


@NEEDS_BITSANDBYTES
@pytest.mark.parametrize("precision, layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_a_stand_in_is_quantized_and_fine_tunes_with_lora(precision: str, layer: str) -> None:
    import peft

    model = quantize.quantize(_tiny_llama(), precision, torch.device("cpu"), torch.float32)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == layer
    # Embeddings, norms and the LM head stay unquantized.
    assert type(model.lm_head) is torch.nn.Linear and model.model.embed_tokens.weight.dtype == torch.float32
    if precision == "4bit":
        weight = model.model.layers[0].mlp.up_proj.weight
        assert weight.quant_state.quant_type == "nf4" and weight.quant_state.dtype == torch.float32
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = [p for p in lora.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.randint(0, 128, (2, 8))
    with quantize.quiet_casts():
        for _ in range(2):
            lora(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))


def _held_bytes(model: torch.nn.Module) -> int:
    """Bytes the quantized model's weights hold: each once, with NF4's block constants and LLM.int8's scales
    (buffers such as rotary frequencies are left out, as the full-precision plan leaves them out)."""
    seen: set[int] = set()
    held = 0
    for tensor in model.parameters():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        held += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            held += state.absmax.numel() * state.absmax.element_size()
            if state.state2 is not None:
                held += state.state2.absmax.numel() * state.state2.absmax.element_size() + 4
        scales = getattr(tensor, "SCB", None)
        if scales is not None:
            held += scales.numel() * scales.element_size()
    return held


@NEEDS_BITSANDBYTES
@pytest.mark.parametrize("precision", quantize.QUANTIZED)
def test_the_plans_quantized_weights_are_what_bitsandbytes_holds(precision: str) -> None:
    from ohlora_fixtures.measure.quantized_weights import quantized_weights

    model = _tiny_llama()
    planned = quantized_weights(model, precision, torch.float32)
    held = _held_bytes(quantize.quantize(model, precision, torch.device("cpu"), torch.float32))
    assert planned.stored_bytes == held
    assert planned.quantized_params and planned.unquantized_params


def test_a_width_the_cpu_nf4_path_cannot_pack_is_one_line_before_any_quantizing() -> None:
    odd = torch.nn.Sequential(torch.nn.Linear(144, 64), torch.nn.Linear(64, 8))
    reason = quantize.unsupported_shapes(odd, "4bit", torch.device("cpu"))
    assert reason and "\n" not in reason and "[144]" in reason
    assert quantize.unsupported_shapes(odd, "8bit", torch.device("cpu")) is None
    assert quantize.unsupported_shapes(torch.nn.Linear(128, 8), "4bit", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="multiples of 64"):
        quantize.quantize(odd, "4bit", torch.device("cpu"), torch.float32)
