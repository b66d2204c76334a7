"""Every operation of one fine-tuning step and of one decoded token, counted at full size on the meta device.

The time model (step_time.py) needs, per operation, the FLOPs it does, the bytes
it reads and writes, and that it is one dispatch: the CPU-side cost PyTorch pays
per operator in eager mode (Python, the dispatcher, autograd's bookkeeping and,
on a GPU, the kernel launch). All three are counted here, not assumed: the
candidate's model runs on the meta device under a dispatch mode that sees every
aten operation autograd and the optimizer issue; matmul and attention FLOPs are
torch.utils.flop_counter's formulas, bytes are the sizes of every tensor an
operation takes and returns, and views (which move no data and launch nothing)
are left out. Attention runs as one fused operation, as the run's kernels do
(flash or memory-efficient on a GPU, flash on the CPU), not as the meta
device's math fallback.

A layer's operations repeat in every layer, so a one-layer and a two-layer build
give the full depth exactly (the first plus the difference per further layer),
as plan.py counts saved activations.
"""

from __future__ import annotations

import json
import unittest.mock
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from ohlora_fixtures.inputs.registry import Candidate
from ohlora_fixtures.measure.devices import DTYPES
from ohlora_fixtures.measure.finetune import FinetuneSettings, fresh_adapter
from ohlora_fixtures.measure.models import build_config
from ohlora_fixtures.records.plans import OpCounts

_aten = torch.ops.aten
# Allocations without a fill launch no kernel and move no data.
_NO_KERNEL = {_aten.empty, _aten.empty_like, _aten.empty_strided, _aten.new_empty, _aten.new_empty_strided}

# Key of one kind of operation: (FLOPs, bytes, the dtype its FLOPs run in; "" for an operation without FLOPs).
Key = tuple[int, int, str]


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))


class _Tracer(TorchDispatchMode):
    """Counts every kernel-launching aten operation by (FLOPs, bytes, FLOP dtype)."""

    active: "_Tracer | None" = None

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[Key] = Counter()

    def add(self, flops: int, nbytes: int, path: str) -> None:
        """One operation; `path` is the dtype its FLOPs run in ("" without FLOPs)."""
        self.ops[(int(flops), int(nbytes), path if flops else "")] += 1

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func.overloadpacket in _NO_KERNEL:
            return out
        packet = func.overloadpacket
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        first = next((t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)), None)
        self.add(flops, _nbytes((args, kwargs)) + _nbytes(out), str(first.dtype).removeprefix("torch.") if first
                 is not None else "")
        return out

    def __enter__(self) -> "_Tracer":
        _Tracer.active = self
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _Tracer.active = None
        super().__exit__(*exc)


def _attention_flops(query: torch.Tensor, key: torch.Tensor) -> int:
    # Two matmuls (scores, then weighted values), each 2 x b x heads x s_q x s_k x head_dim.
    *outer, s_q, d = query.shape
    heads = 1
    for size in outer:
        heads *= size
    return 4 * heads * s_q * key.shape[-2] * d


class _TracedAttention(torch.autograd.Function):
    """A fused attention kernel's work, forward and backward, on the meta device: one operation each way.

    The backward recomputes the scores and does five matmuls of the forward's size where it did two (2.5x)."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        ctx.save_for_backward(query, key, value, out)
        if _Tracer.active is not None:
            _Tracer.active.add(_attention_flops(query, key), _nbytes((query, key, value, out)),
                               str(query.dtype).removeprefix("torch."))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        query, key, value, out = ctx.saved_tensors
        grads = (torch.empty_like(query), torch.empty_like(key), torch.empty_like(value))
        if _Tracer.active is not None:
            _Tracer.active.add(5 * _attention_flops(query, key) // 2, _nbytes((query, key, value, out, grad, grads)),
                               str(query.dtype).removeprefix("torch."))
        return grads


def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: Any = None,
               enable_gqa: bool = False) -> torch.Tensor:
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        # Grouped keys and values are read once per group, not copied per head.
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    return _TracedAttention.apply(query, key, value)


@contextmanager
def _fused_attention() -> Iterator[None]:
    with unittest.mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _attention), \
            without_padding_check():
        yield


@contextmanager
def without_padding_check() -> Iterator[None]:
    """The meta pass without transformers' warning of padding and no attention mask: it reads token values
    (Tensor.item), which meta tensors have none of, and failed GPT-2's pass where its config names a pad token.
    Only a warning: nothing counted changes."""
    from transformers import PreTrainedModel

    with unittest.mock.patch.object(PreTrainedModel, "warn_if_padding_and_no_attention_mask", _no_warning):
        yield


def _no_warning(*args: Any, **kwargs: Any) -> None:
    return None


def _shallow(candidate: Candidate, layers: int) -> torch.nn.Module:
    from ohlora_fixtures.measure.plan import _shallow as shallow

    return shallow(candidate, layers)


def _deep(one: Counter[Key], two: Counter[Key], depth: int) -> OpCounts:
    """The full depth's operations: the first layer's build plus (depth - 1) times what one more layer adds."""
    counts = {key: one[key] + (depth - 1) * (two[key] - one[key]) for key in one.keys() | two.keys()}
    return tuple(sorted((flops, nbytes, path, count) for (flops, nbytes, path), count in counts.items() if count > 0))


def _depth(candidate: Candidate) -> int:
    return int(build_config(candidate, "full").get_text_config().num_hidden_layers)


_TRACED: dict[tuple, Any] = {}
"""Traces of this process by everything that shapes them: a report plans the same candidates again and again."""


def _cached(kind: str, candidate: Candidate, *shape: Any) -> Any:
    key = (kind, candidate.model_type, candidate.architecture, json.dumps(candidate.config, sort_keys=True),
           tuple(candidate.target_modules), *shape)
    if key not in _TRACED:
        _TRACED[key] = {"finetune": _finetune_ops, "decode": _decode_ops}[kind](candidate, *shape)
    return _TRACED[key]


def finetune_ops(
    candidate: Candidate, rank: int, batch_size: int, seq_len: int, dtype: str
) -> tuple[OpCounts, OpCounts, OpCounts]:
    """One training step at full size: forward and backward, then AdamW's step one tensor at a time (torch's
    default on the CPU), then AdamW's multi-tensor step (its default on a GPU); the state AdamW creates in its
    first step is not counted (one step of the run)."""
    return _cached("finetune", candidate, rank, batch_size, seq_len, dtype)


def decode_ops(candidate: Candidate, prompt_tokens: int, context: int, dtype: str) -> tuple[OpCounts, OpCounts]:
    """A prompt's prefill of `prompt_tokens` tokens, and one new token's forward with `context` tokens cached."""
    return _cached("decode", candidate, prompt_tokens, context, dtype)


def _finetune_ops(
    candidate: Candidate, rank: int, batch_size: int, seq_len: int, dtype: str
) -> tuple[OpCounts, OpCounts, OpCounts]:
    traced: list[tuple[Counter[Key], Counter[Key], Counter[Key]]] = []
    for layers in (1, 2):
        model = _shallow(candidate, layers)
        with torch.device("meta"), fresh_adapter(
            model.to(DTYPES[dtype]), candidate, FinetuneSettings(rank=rank)
        ) as adapted:
            adapted.train()
            ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
            with _fused_attention(), _Tracer() as step:
                adapted(input_ids=ids, labels=ids).loss.backward()
            optimizers = []
            for foreach in (False, True):
                trainable = [p for p in adapted.parameters() if p.requires_grad]
                optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=foreach)
                optimizer.step()  # creates the state
                with _Tracer() as optimizer_step:
                    optimizer.step()
                optimizers.append(optimizer_step.ops)
        traced.append((step.ops, *optimizers))
    depth = _depth(candidate)
    return tuple(_deep(one, two, depth) for one, two in zip(*traced))  # type: ignore[return-value]


def _decode_ops(candidate: Candidate, prompt_tokens: int, context: int, dtype: str) -> tuple[OpCounts, OpCounts]:
    traced = []
    for layers in (1, 2):
        model = _shallow(candidate, layers).to(DTYPES[dtype]).eval()
        with torch.device("meta"), torch.no_grad(), _fused_attention():
            with _Tracer() as prefill:
                model(input_ids=torch.zeros(1, max(1, prompt_tokens), dtype=torch.long), use_cache=True)
            cached = model(input_ids=torch.zeros(1, max(1, context), dtype=torch.long), use_cache=True)
            carried = ({"state": cached.state} if getattr(cached, "state", None) is not None
                       else {"past_key_values": cached.past_key_values})
            with _Tracer() as token, warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # transformers renames past_key_values
                model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True, **carried)
        traced.append((prefill.ops, token.ops))
    depth = _depth(candidate)
    (p1, t1), (p2, t2) = traced
    return _deep(p1, p2, depth), _deep(t1, t2, depth)
