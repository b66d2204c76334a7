"""Inference cost of every untuned candidate: the prompts, at most N new tokens each.

Timed: each prompt's generate call. The answers go to a CSV for grading.
"""


def test_inference(ohlora_inference, ohlora_candidate, ohlora_study):
    record = ohlora_inference(ohlora_candidate)

    assert record.inference.prompts == len(ohlora_study.experiment.prompts)
    assert record.inference.max_new_tokens_seen <= ohlora_study.settings.max_new_tokens
