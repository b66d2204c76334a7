"""ohlora-bench: a pytest benchmark plugin for choosing a base model to fine-tune with LoRA."""

__version__ = "0.1.0"
