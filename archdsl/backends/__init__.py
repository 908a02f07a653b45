"""Backends: the IR compiled to torch modules, checkpoints (and later DOT and summaries)."""
