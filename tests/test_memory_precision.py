"""The memory estimate per precision (docs/accounting.md, "Memory"): every saved tensor in the dtype
it has under fp32, bf16 weights and bf16 autocast, against the tensors a real step saves."""

from __future__ import annotations

import pytest
import torch

from glmlab.accounting.memory import (
    GROUP_ALIGN,
    WIDTH_ALIGN,
    StepDtypes,
    _ffn_activations,
    activation_bytes,
    backward_transient,
    step_dtypes,
    training_memory,
)
from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.device import bf16_parameters
from glmlab.errors import GlmlabError
from glmlab.measure import profile, saved_tensor_bytes
from glmlab.model import moe
from glmlab.model.losses import total_loss
from glmlab.plan import SPARSE_BACKWARD_BYTES

# seq 40 > index_topk 16: the sparse path and its KL run on every DSA layer, and the MTP layer
SPARSE = ("index_topk=16",)
CONFIGS = {"sparse": SPARSE, "masked": (*SPARSE, "dsa_impl=mask"), "dense": ("use_dsa=false",)}


def _saved_bytes(cfg, dtypes: StepDtypes) -> int:
    """Bytes one training forward (labels given) saves for backward on the CPU under `dtypes`:
    fp32, bf16 weights, or bf16 autocast (a GPU's bf16-mixed; the CPU's autocast casts matrix
    products the same way)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    if dtypes.weights == 2:
        bf16_parameters(model)
    ids = torch.randint(0, cfg.model.vocab_size, (2, 40))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtypes.autocast)
    with saved_tensor_bytes(list(model.parameters())) as saved, autocast:
        total_loss(model(ids, labels=ids), cfg.train, dense_warmup=False)
    return saved["bytes"]


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize(
    "dtypes",
    [StepDtypes(4, 4, False), StepDtypes(4, 2, True), StepDtypes(2, 2, False)],
    ids=["fp32", "autocast", "bf16"],
)
def test_saved_tensors_match_the_estimate(config, dtypes):
    """Every saved tensor in its dtype: bf16 products beside fp32 norms, probabilities, losses and
    (unless the weights are bf16) residual stream; under autocast a bf16 copy of an fp32 input per
    product that reads it and of every weight. The estimate counts a GPU's LayerNorm and
    log-softmax in fp32 where the CPU's autocast runs them in bf16, and not the key mass the
    masked path gathers and drops before backward."""
    cfg = load_config("glm5-tiny", list(CONFIGS[config]))
    estimate = activation_bytes(cfg, 40, 2, dtypes)
    assert estimate["total"] / _saved_bytes(cfg, dtypes) == pytest.approx(1.0, abs=0.02)  # measured 0.99-1.01


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_profile_memory_per_precision(precision):
    """`glmlab profile` follows train.precision (bf16-mixed trains in fp32 on a CPU, as the trainer
    does) and compares like with like: saved tensors plus weights, gradients and AdamW states."""
    cfg = load_config("glm5-tiny", [*SPARSE, f"train.precision={precision}"])
    out = profile(cfg, 40, 2, steps=1, device="cpu", decode_steps=1)
    assert out["precision"] == precision
    assert out["peak_memory_ratio"] == pytest.approx(1.0, abs=0.02)
    estimated, measured = out["memory_estimated"], out["memory_measured"]
    assert estimated["activations"] / measured["activations"] == pytest.approx(1.0, abs=0.03)
    assert estimated["optimizer"] == pytest.approx(measured["optimizer"], rel=0.01)
    assert measured["weights"] == pytest.approx(estimated["weights"], rel=1e-4)  # the count has router biases


@pytest.mark.parametrize(
    "dtypes", [StepDtypes(4, 2, True), StepDtypes(2, 2, False)], ids=["autocast", "bf16"]
)
@pytest.mark.parametrize("width", [[], ["moe_intermediate_size=12"]], ids=["aligned", "padded"])
def test_grouped_experts_saved_tensors(dtypes, width):
    """The GPU's grouped-GEMM experts (run here on the CPU): the padded buffer's rows and the
    per-pair tensors, as `_ffn_activations` counts them for CUDA; a width of 12 runs padded to 16,
    with padded weight copies kept for the backward pass."""
    assert (moe.GROUP_ALIGN, moe.WIDTH_ALIGN) == (GROUP_ALIGN, WIDTH_ALIGN)
    cfg = load_config("glm5-tiny", width)
    torch.manual_seed(0)
    layer = moe.MoE(cfg.model)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.02)
    x = torch.randn(2, 40, cfg.model.hidden_size, requires_grad=True)
    if not dtypes.autocast:
        bf16_parameters(layer)
        x = x.detach().bfloat16().requires_grad_()
    params = list(layer.parameters())
    grouped = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtypes.autocast)
    with saved_tensor_bytes(params) as saved, grouped:
        flat = x.reshape(-1, x.shape[-1])
        routing = layer.gate(flat)
        y = layer.experts.grouped(flat, routing) + layer.shared_experts(flat)
        layer.balance_loss(routing, 2, 40)
    estimate = _ffn_activations(cfg.model, 40, True, dtypes, "cuda", 2)  # weight copies included
    assert y.dtype == x.dtype
    assert estimate / saved["bytes"] == pytest.approx(1.0, abs=0.02)


def test_precision_on_each_device_and_the_gpu_peak():
    """bf16-mixed autocasts on CUDA only (glmlab.device.autocast); the GPU peak holds the
    activations and the backward's first transients beside weights and optimiser states, and the
    gradients too when an earlier micro-batch left them."""
    assert step_dtypes("bf16-mixed", "cpu") == step_dtypes("fp32", "cuda") == StepDtypes(4, 4, False)
    assert step_dtypes("bf16-mixed", "cuda") == StepDtypes(4, 2, True)
    assert step_dtypes("bf16", "cpu") == StepDtypes(2, 2, False)
    with pytest.raises(GlmlabError, match="unknown precision"):
        step_dtypes("fp16", "cuda")
    cfg = load_config("glm5-small", [])
    one = training_memory(cfg, 1024, 16, "bf16-mixed", device="cuda")
    assert one["weights"] == one["gradients"] == 4 * one["params"] and one["optimizer"] == 8 * one["params"]
    held = one["weights"] + one["optimizer"] + one["activations"] + one["transient"]
    assert one["peak"] == held and one["total"] == held - one["transient"] + one["gradients"]
    accumulated = training_memory(cfg, 1024, 16, "bf16-mixed", device="cuda", grad_accum=2)
    assert accumulated["peak"] == held + one["gradients"]
    bf16 = training_memory(cfg, 1024, 16, "bf16", device="cuda")
    assert bf16["weights"] == 2 * bf16["params"] and bf16["optimizer"] == 4 * bf16["params"]


def test_the_sparse_kernels_backward_transient_is_in_the_gpu_peak():
    """Under the Triton sparse path the last layer's backward allocates dq ([N,H,R] in bf16), dkv
    in fp32 and P and dS of a chunk of queries (at most SPARSE_BACKWARD_BYTES): at 64K tokens of
    GLM-5's attention that outweighs the LM head's gradients, so it sets the peak's transient;
    the torch gather path has none of it."""
    shape = ["use_moe=false", "num_nextn_predict_layers=0", "vocab_size=1024", "num_hidden_layers=2"]
    triton = load_config("glm5", [*shape, "dsa_impl=triton"])
    gather = load_config("glm5", [*shape, "dsa_impl=gather"])
    N, m = 65536, triton.model
    dq = N * m.num_attention_heads * (m.kv_lora_rank + m.qk_rope_head_dim) * 2
    sparse = backward_transient(triton, N, 1, "bf16", "cuda", mtp=False)
    head = backward_transient(gather, N, 1, "bf16", "cuda", mtp=False)
    assert head == N * m.vocab_size * (2 + 8)  # the kept logits and the head's fp32 gradients
    assert dq + SPARSE_BACKWARD_BYTES < sparse - N * m.vocab_size * 2 < dq + SPARSE_BACKWARD_BYTES + N * 4096
