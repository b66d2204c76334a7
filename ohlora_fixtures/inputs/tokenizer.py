"""A tokenizer built from the dataset itself, for random-weight runs that cannot download one."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}
DEFAULT_VOCAB_SIZE = 2048


def dataset_tokenizer(
    texts: Iterable[str], cache_dir: Path, vocab_size: int = DEFAULT_VOCAB_SIZE
) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on `texts`, cached by their content.

    The same texts always give the same file, so random-weight runs are
    reproducible and the training (about a second) happens once.
    """
    corpus = sorted(set(texts))
    digest = hashlib.sha256("\n".join([tokenizers.__version__, str(vocab_size), *corpus]).encode("utf-8")).hexdigest()[
        :16
    ]
    path = cache_dir / f"tokenizer-{digest}.json"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
        # Metaspace keeps Hangul syllables whole instead of splitting them into bytes.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False
        )
        tokenizer.train_from_iterator(corpus, trainer=trainer)
        # One partial file per process: pytest-xdist workers may build the same tokenizer at once.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tokenizer.save(str(partial))
            partial.replace(path)
        except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for an OS error
            # A cache is a convenience: on a full or read-only disk the run goes on with the tokenizer in memory.
            partial.unlink(missing_ok=True)
            warnings.warn(f"{path}: the dataset tokenizer could not be cached ({error}); it is trained again "
                          "next run", stacklevel=2)
            return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **SPECIAL_TOKENS)


def experiment_tokenizer(templates: Sequence[str], experiment: Any, cache_dir: Path) -> PreTrainedTokenizerFast:
    """The dataset tokenizer a random-weight run builds: trained on the prompt templates and `experiment`'s rows."""
    pairs = (*experiment.train, *experiment.valid, *experiment.prompts)
    texts = list(templates) + [pair.question for pair in pairs] + [pair.answer for pair in pairs if pair.answer]
    return dataset_tokenizer(texts, cache_dir)
