"""What a run is asked to do: the option table, defaults, candidate registry, dataset, tokenizer and paths."""
