"""Measurement: models, the fine-tuning and inference regions, meters, devices, machine load and the plan."""
