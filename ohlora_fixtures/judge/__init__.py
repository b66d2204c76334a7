"""Judging figures: answer quality, the Pareto front and the weighted, noise-aware recommendation."""
