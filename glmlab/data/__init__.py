"""Corpora (built-in stdlib, user files, synthetic), tokenizers and sequence packing."""
