"""What `glmlab flops` prints: FLOPs, parameters, memory and the article's claims for a
config at one or more context lengths (docs/accounting.md)."""

from __future__ import annotations

from glmlab.accounting.claims import check_claims
from glmlab.accounting.conventions import get_convention
from glmlab.accounting.flops import MODES, flops_report
from glmlab.accounting.memory import inference_memory, kv_cache_bytes_per_token, training_memory
from glmlab.accounting.params import parameter_counts
from glmlab.accounting.traffic import decode_step_bytes
from glmlab.config import Config
from glmlab.errors import GlmlabError


def parse_lengths(text: str) -> list[int]:
    """'4k,32k,128k' or '4096' -> token counts (k = 1024)."""
    out = []
    for part in str(text).split(","):
        item = part.strip().lower()
        scale = 1024 if item.endswith("k") else 1
        try:
            value = int(float(item[:-1] if scale > 1 else item) * scale)
        except ValueError:
            raise GlmlabError(f"--seq expects lengths like 4096 or 4k,32k,128k, got '{part}'") from None
        if value < 1:
            raise GlmlabError(f"--seq lengths must be positive, got '{part}'")
        out.append(value)
    return out


def seq_summary(
    cfg: Config,
    seq: int,
    batch: int,
    convention: str,
    mtp: bool,
    dtype: str = "bf16",
    attention: str | None = None,
    device: str = "cpu",
) -> dict:
    """Per-token FLOPs of every mode at one context length, with the breakdowns."""
    train, forward, prefill, decode = (
        flops_report(cfg, seq, mode, convention, mtp, attention_form=attention, device=device)
        for mode in MODES
    )
    step_bytes = decode_step_bytes(cfg, seq, batch, weight_dtype=dtype, cache_dtype=dtype)
    main_decode = flops_report(cfg, seq, "decode", convention, False, attention_form=attention, device=device)
    flops_per_byte = main_decode.total * batch / step_bytes["total"]
    return {
        "seq_len": seq,
        "batch": batch,
        "training_flops_per_token": train.per_token,
        "forward_flops_per_token": forward.per_token,
        "prefill_flops_per_token": prefill.per_token,
        "decode_flops_per_token": decode.per_token,
        "training_flops_per_step": train.total * batch,
        "breakdown": train.to_dict()["by_component_per_token"],
        "forward_breakdown": forward.to_dict()["by_component_per_token"],
        "decode_breakdown": decode.to_dict()["by_component_per_token"],
        "by_layer": train.to_dict()["by_layer_per_token"],
        "memory_fp32": training_memory(cfg, seq, batch, "fp32", mtp=mtp, device=device),
        # bf16 autocast exists on a GPU only (the CPU trains bf16-mixed in fp32): priced as a GPU runs it
        "memory_bf16_mixed": training_memory(cfg, seq, batch, "bf16-mixed", mtp=mtp, device="cuda"),
        "memory_inference": inference_memory(cfg, seq, batch, dtype),
        # a decoding step of the main model (no MTP), `batch` rows at position seq - 1: what it must
        # read, and its FLOPs a byte
        "decode_step_bytes": {**step_bytes, "flops_per_byte": flops_per_byte},
    }


def flops_summary(
    cfg: Config,
    seqs: list[int],
    batch: int = 1,
    convention: str = "glmlab",
    mtp: bool = True,
    dtype: str = "bf16",
    attention: str | None = None,
    device: str = "cpu",
) -> dict:
    """Everything `glmlab flops --json` prints: one entry per context length in `sweep`,
    the first also at the top level. `dtype` sizes inference weights and the KV cache; the
    headline `kv_cache_bytes_per_token` is always the bf16 latent (GQA/MHA: K/V) cache of all main layers.
    `attention` (expanded / absorbed) sets the core-attention form of the `dsa` convention;
    `device` (cpu, cuda), whose execution the `glmlab` convention and the activations count."""
    conv = get_convention(convention, attention)
    sweep = [seq_summary(cfg, s, batch, convention, mtp, dtype, attention, device) for s in seqs]
    kv = kv_cache_bytes_per_token(cfg, "bf16")
    return {
        "name": cfg.name,
        "convention": conv.name,
        "convention_description": conv.description,
        "attention_form": conv.attention_form if not conv.executed else "as executed",
        "device": device,
        "mtp": mtp and cfg.model.num_nextn_predict_layers > 0,
        **sweep[0],
        "kv_cache_bytes_per_token": kv["latent"] + kv["kv"],
        "kv_cache_bf16": kv,
        "kv_cache_dtype": {"dtype": dtype, **kv_cache_bytes_per_token(cfg, dtype)},
        "params": parameter_counts(cfg.model),
        "claims": check_claims(cfg, max(131072, max(seqs))),
        "sweep": sweep,
    }
