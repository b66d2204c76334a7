"""Fine-tuning cost of every candidate at every LoRA rank.

Timed: the 50 optimizer steps (study settings). Recorded in extra_info: peak
memory, every step's loss, eval loss, trainable parameters, tokens per second.
"""

import math


def test_finetune(ohlora_finetune, ohlora_candidate, lora_rank):
    record = ohlora_finetune(ohlora_candidate, lora_rank)

    figures = record.finetune
    assert figures.steps == len(figures.losses)
    assert all(math.isfinite(loss) for loss in figures.losses)
    assert figures.trainable_params > 0
