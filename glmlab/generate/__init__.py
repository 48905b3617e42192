"""Text generation: latent-cache decoding on fixed-shape steps (CUDA graphs on a GPU), batches,
sampling, MTP speculative decoding (docs/architecture.md, "Decoding")."""

from glmlab.generate.generator import GenerationResult, Generator
from glmlab.generate.sampling import SamplingParams
from glmlab.generate.speculative import SpeculativeStats

__all__ = ["GenerationResult", "Generator", "SamplingParams", "SpeculativeStats"]
