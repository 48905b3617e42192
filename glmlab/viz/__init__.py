"""Seeing inside runs and models: run plots (`glmlab plot`), TensorBoard logging, and the
inspector (`glmlab inspect`) for routing, DSA selection, the latent cache and MTP drafts."""
