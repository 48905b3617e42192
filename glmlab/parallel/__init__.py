"""Parallelism applied to a glmlab model from outside it (torchtitan's rule): FSDP2, expert
parallelism, the process group, launching ranks and sharded checkpoints (docs/scaling.md)."""
