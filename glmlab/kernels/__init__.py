"""Triton kernels for the GPU, each beside a plain torch twin (`*_ref.py`) that states what it computes
and serves as its reference in the tests."""
