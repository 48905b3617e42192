"""`python -m glmlab`: the same command as `glmlab` (what torchrun and --nproc-per-node start)."""

from glmlab.cli import main

main()
