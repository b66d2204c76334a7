"""A quantized base model (QLoRA's 4-bit NF4 or LLM.int8's 8-bit) from a full-precision one, through bitsandbytes.

Random-weight stand-ins are built in full precision and then quantized as a
checkpoint would be: saved as safetensors to a temporary directory and loaded
again with the quantization config, so the layers are the ones a user's
`from_pretrained(..., quantization_config=...)` gives.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import tempfile
import warnings
from typing import Any, Iterator

import torch

PRECISIONS = ("none", "8bit", "4bit")
QUANTIZED = ("8bit", "4bit")
BITSANDBYTES_KERNEL_HUB = "kernels-community/quantization-bitsandbytes"


def unavailable(precision: str, device: torch.device) -> str | None:
    """Why `precision` cannot run here (one line), or None where it can."""
    if precision == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        return (
            f"{precision} needs bitsandbytes, which is not installed: "
            "pip install 'ohlora-bench[quantization]'"
        )
    if device.type not in ("cpu", "cuda"):
        return f"{precision}: bitsandbytes does not run on {device.type}"
    return None


@contextlib.contextmanager
def _no_hub_kernels(allow_remote_code: bool) -> Iterator[None]:
    """bitsandbytes' CPU backend fetches a kernel from the hub (`kernels.get_kernel`) when imported; without the
    user's opt-in to remote code the `kernels` package is hidden for that import, so its own code runs, and its
    per-import warning is replaced by one line."""
    if allow_remote_code or "bitsandbytes" in sys.modules:
        yield
        return
    hidden = sys.modules.get("kernels", ...)
    sys.modules["kernels"] = None  # type: ignore[assignment]  # `from kernels import ...` raises ImportError
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        if hidden is ...:
            sys.modules.pop("kernels", None)
        else:
            sys.modules["kernels"] = hidden


@contextlib.contextmanager
def quiet_casts() -> Iterator[None]:
    """Without the line LLM.int8 warns on every float32 forward pass (its inputs go to float16): the run's
    precision is in the record, and a line per step says nothing new."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
        yield


def guard_hub_kernels(allow_remote_code: bool) -> None:
    """Import bitsandbytes, where installed, before peft or transformers do: their import of it would fetch the
    hub's kernel with no opt-in asked. Call before the first peft import."""
    if importlib.util.find_spec("bitsandbytes") is not None:
        import_bitsandbytes(allow_remote_code)


def import_bitsandbytes(allow_remote_code: bool) -> Any:
    """bitsandbytes, imported without a kernel from the hub unless the user opted in to remote code."""
    fresh = "bitsandbytes" not in sys.modules
    with _no_hub_kernels(allow_remote_code), warnings.catch_warnings():
        # Its import uses torch.jit.script_method, deprecated: a warning a layer, in every run once installed.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated")
        import bitsandbytes
    if fresh and not allow_remote_code:
        logging.getLogger("ohlora_fixtures").info(
            "bitsandbytes: the hub's CPU kernel (%s) is not loaded without --ohlora-trust-remote-code; "
            "its own code runs",
            BITSANDBYTES_KERNEL_HUB,
        )
    return bitsandbytes


def quantization_config(precision: str, compute_dtype: torch.dtype, double_quant: bool = False) -> Any:
    """transformers' BitsAndBytesConfig for `precision`: NF4 computing in the run's dtype, or LLM.int8."""
    from transformers import BitsAndBytesConfig

    if precision == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=double_quant,
        )
    if precision == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"not a quantized precision: {precision!r}")


def unsupported_shapes(model: Any, precision: str, device: torch.device) -> str | None:
    """Why bitsandbytes cannot run `model`'s layers in `precision` on `device` (one line), or None: its CPU NF4
    path packs each weight's input width in blocks of 64, and fails on any other width."""
    if precision != "4bit" or device.type != "cpu":
        return None
    widths = sorted(
        {
            module.in_features
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "lm_head" and module.in_features % 64
        }
    )
    if not widths:
        return None
    return f"4bit on the CPU: bitsandbytes needs layer input widths in multiples of 64, this model has {widths}"


def quantize(
    model: Any, precision: str, device: torch.device, dtype: torch.dtype, allow_remote_code: bool = False
) -> Any:
    """`model` (full precision) saved and loaded again in `precision`; the full-precision copy is let go.
    ValueError with the reason where bitsandbytes cannot run its shapes (`unsupported_shapes`)."""
    reason = unsupported_shapes(model, precision, device)
    if reason:
        raise ValueError(reason)
    import_bitsandbytes(allow_remote_code)
    config = quantization_config(precision, dtype)
    generation, name = model.generation_config, model.name_or_path
    with tempfile.TemporaryDirectory(prefix="ohlora-quantize-") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        cls = type(model)
        del model
        device_map = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
        quantized = cls.from_pretrained(
            folder, quantization_config=config, dtype=dtype, device_map=device_map, use_safetensors=True
        )
    quantized.generation_config = generation
    quantized.config.name_or_path = name  # not the temporary folder, which peft would look in on saving
    import peft

    # QLoRA's preparation: norms and other unquantized weights in float32, inputs that carry a gradient to the
    # adapters; gradient checkpointing stays --ohlora-gradient-checkpointing's (finetune.fresh_adapter).
    return peft.prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)
