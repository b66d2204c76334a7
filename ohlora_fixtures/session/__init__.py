"""The pytest face behind plugin.py: the study's context, the benchmark bodies, scale-out and the summary."""
