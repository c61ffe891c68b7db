"""Evaluation: digit classifiers for coherence scores, and metrics built on them."""
