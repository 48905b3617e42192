"""The GLM-5 model, one mechanism per file (see docs: glm5-architecture.md)."""

from glmlab.model.model import CausalLM, CausalLMOutput, ModelCache

__all__ = ["CausalLM", "CausalLMOutput", "ModelCache"]
