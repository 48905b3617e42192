"""Text generation: latent-cache decoding, sampling, MTP speculative decoding (spec 2.1, 3)."""

from glmlab.generate.generator import GenerationResult, Generator
from glmlab.generate.sampling import SamplingParams
from glmlab.generate.speculative import SpeculativeStats

__all__ = ["GenerationResult", "Generator", "SamplingParams", "SpeculativeStats"]
