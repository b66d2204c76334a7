"""The reference study's settings: the one place every default of a run comes from.

20 train rows in batches of 4 for 10 epochs (50 AdamW steps at lr 2e-4),
LoRA alpha 16 and dropout 0.05 at ranks 16/32/64, 5 held-out rows, 25 prompts
of at most 80 new tokens, seed 42, a 12 GiB budget (the study's T4 less headroom).
The option table (settings.py), FinetuneSettings, GenerationSettings and the
full-size plan all read these names.
"""

TRAIN_ROWS = 20
VALID_ROWS = 5
PROMPTS = 25
BATCH_SIZE = 4
EPOCHS = 10
LEARNING_RATE = 2e-4
LORA_ALPHA = 16
LORA_DROPOUT = 0.05
RANKS = (16, 32, 64)
MAX_NEW_TOKENS = 80
SEED = 42
VRAM_BUDGET_MB = 12288.0
PLAN_SEQ_LEN = 64  # tokens per training row the full-size plan assumes
PLAN_DTYPE = "bfloat16"  # the dtype a GPU run uses
