"""Evaluation on one footing for every objective: sentence scorers, BLiMP-format pairs, perplexity."""
