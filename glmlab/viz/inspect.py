"""`glmlab inspect`: what a model does with one prompt, layer by layer.

- Routing: forward hooks on each MoE layer's router, routed experts and shared expert record
  what the forward pass itself chose (experts and gate weights per token) and how large the
  shared expert's output is beside the routed one's.
- DSA: a hook records each attention layer's normed input; from it the layer's own pieces
  compute the dense attention probabilities (summed over heads, rows normalised), the
  indexer's scores, and the top-k the model selects from them, with the recall of each row
  (the share of the dense attention inside the selection).
- MLA: cache bytes per token, latent against expanded, from glmlab.accounting for this config.
- MTP: greedy continuation, then every draft the MTP chain makes at each decoding step,
  computed teacher-forced on that continuation: speculative decoding's greedy drafts equal
  these up to each step's first rejection, so the acceptance per depth is the decoder's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from glmlab.accounting.memory import kv_cache_bytes_per_token
from glmlab.errors import GlmlabError
from glmlab.generate.speculative import SpeculativeStats
from glmlab.model import CausalLM
from glmlab.model.dsa import select_topk
from glmlab.model.moe import MoE


@dataclass
class RoutingMap:
    """One MoE layer on the prompt: per token its experts and gate weights (as the router chose)."""

    experts: list[list[int]]  # [S,k]
    gates: list[list[float]]  # [S,k] after normalisation and scaling
    shared_share: list[float] | None  # ||shared|| / (||shared|| + ||routed||) per token
    n_experts: int
    # The router input's energy along its mean over the prompt's tokens, ||mean u||^2 / mean ||u||^2:
    # near 1, every token looks alike to the router and all choose the same experts
    # (docs/architecture.md, "Routing collapse at initialisation"). About 1/N for N unrelated tokens.
    common_share: float

    def dense(self) -> torch.Tensor:
        """[S,E] gate weight of each expert for each token (0 where not chosen)."""
        out = torch.zeros(len(self.experts), self.n_experts)
        return out.scatter_(1, torch.tensor(self.experts), torch.tensor(self.gates))

    def counts(self) -> list[int]:
        return torch.bincount(torch.tensor(self.experts).flatten(), minlength=self.n_experts).tolist()


@dataclass
class DSAMap:
    """One attention layer on the prompt: dense attention against the indexer's choice."""

    topk: int
    sparse: bool  # the prompt is longer than index_topk, so attention really reads the top-k
    shared_from: int | None  # IndexShare: the layer whose indexer chose (None: this layer's own)
    attention: list[list[float]]  # [S,S] dense probabilities summed over heads, rows sum to 1
    scores: list[list[float | None]]  # [S,S] index scores (None above the diagonal)
    selected: list[list[int]]  # per query the key positions selected
    recall: list[float]  # per query, attention mass inside the selection

    @property
    def mean_recall(self) -> float:
        return sum(self.recall) / len(self.recall)


@dataclass
class LayerInspection:
    layer: int
    routing: RoutingMap | None = None
    dsa: DSAMap | None = None


@dataclass
class DraftStep:
    """One speculative step at position n: the drafts for t_{n+1..}, how many were accepted,
    and the token the main model emitted after them."""

    position: int
    drafts: list[int]  # up to and including the first rejected one
    accepted: int
    emitted: list[int]  # the accepted drafts plus the main model's next token


@dataclass
class MTPInspection:
    depth: int
    steps: list[DraftStep]
    acceptance: list[float]  # per draft position, accepted / verified
    accepted: list[int]
    verified: list[int]
    tokens_per_step: float


@dataclass
class Inspection:
    name: str
    prompt: str
    token_ids: list[int]
    tokens: list[str]
    layers: list[LayerInspection]
    cache: dict
    mtp: MTPInspection | None = None
    continuation: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for layer, data in zip(self.layers, out["layers"], strict=True):
            if layer.dsa is not None:
                data["dsa"]["mean_recall"] = layer.dsa.mean_recall
            if layer.routing is not None:
                data["routing"]["counts"] = layer.routing.counts()
        return out


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Each token as text, with whitespace made visible."""
    visible = {"\n": "\\n", "\t": "\\t", " ": "·"}
    return ["".join(visible.get(c, c) for c in tokenizer.decode([i])) for i in ids]


def check_layers(model: CausalLM, layer: int | None) -> list[int]:
    n = len(model.model.layers)
    if layer is None:
        return list(range(n))
    if not 0 <= layer < n:
        raise GlmlabError(f"--layer {layer} is out of range: this model has layers 0-{n - 1}")
    return [layer]


class _Recorder:
    """Hooks that keep each attention layer's input and what each MoE layer's pieces returned."""

    def __init__(self, model: CausalLM) -> None:
        self.attn_inputs: dict[int, tuple] = {}
        self.moe: dict[int, dict] = {}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            self.handles.append(layer.self_attn.register_forward_pre_hook(self._attn(i)))
            if isinstance(layer.mlp, MoE):
                parts = {"routing": layer.mlp.gate, "routed": layer.mlp.experts}
                if layer.mlp.shared_experts is not None:
                    parts["shared"] = layer.mlp.shared_experts
                self.moe[i] = {}
                for name, module in parts.items():
                    self.handles.append(module.register_forward_hook(self._keep(i, name)))

    def _attn(self, i: int):
        def hook(module, args):
            self.attn_inputs[i] = args[:3]  # xn, cos, sin

        return hook

    def _keep(self, i: int, name: str):
        def hook(module, args, output):
            self.moe[i][name] = output
            if name == "routing":
                self.moe[i]["router_input"] = args[0]

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _routing(saw: dict, n_experts: int) -> RoutingMap:
    r = saw["routing"]
    share = None
    if "shared" in saw:
        # the experts' output includes the shared experts' (MoE passes them as `beside`)
        routed = (saw["routed"].float() - saw["shared"].float()).norm(dim=-1)
        shared = saw["shared"].float().norm(dim=-1)
        share = (shared / (shared + routed).clamp_min(1e-12)).tolist()
    return RoutingMap(r.indices.tolist(), r.gates.float().tolist(), share, n_experts,
                      common_direction_share(saw["router_input"]))  # fmt: skip


def common_direction_share(u: torch.Tensor) -> float:
    """||mean over tokens of u||^2 / mean over tokens of ||u||^2 for router inputs u [N,d]."""
    u = u.float().reshape(-1, u.shape[-1])
    return (u.mean(0).pow(2).sum() / u.pow(2).sum(-1).mean().clamp_min(1e-30)).item()


def _dsa(model: CausalLM, i: int, rec: _Recorder) -> DSAMap:
    """Dense attention, index scores and top-k selection of layer i (batch of one)."""
    cfg = model.config
    attn = model.model.layers[i].self_attn
    source = i
    while model.model.layers[source].self_attn.indexer is None:  # IndexShare: an earlier layer chose
        source -= 1
    xn, cos, sin = rec.attn_inputs[i]
    S = xn.shape[1]
    _, mass = attn.attend_dense(attn.project(xn, cos, sin), need_mass=True)  # [1,S,S] summed over heads
    dense = mass.float()[0]
    dense = dense / dense.sum(-1, keepdim=True)
    src = model.model.layers[source].self_attn
    sxn, scos, ssin = rec.attn_inputs[source]
    causal = torch.ones(S, S, dtype=torch.bool, device=xn.device).tril()
    keys = src.indexer.keys(sxn, scos, ssin)
    q_latent = src.project(sxn, scos, ssin).q_latent
    scores = src.indexer.scores(sxn, q_latent, scos, ssin, keys, causal, chunks=((0, S, S),))[0].float()
    indices, valid = (t[0] for t in select_topk(scores[None], cfg.index_topk))
    selected = [idx[ok].sort().values.tolist() for idx, ok in zip(indices, valid, strict=True)]
    keep = torch.zeros(S, S, dtype=torch.bool, device=xn.device).scatter_(1, indices, valid)
    recall = (dense * keep).sum(-1).tolist()
    grid = [[v if c else None for v, c in zip(row, crow, strict=True)]
            for row, crow in zip(scores.tolist(), causal.tolist(), strict=True)]  # fmt: skip
    shared = None if source == i else source
    return DSAMap(cfg.index_topk, S > cfg.index_topk, shared, dense.tolist(), grid, selected, recall)


@torch.inference_mode()
def inspect_layers(model: CausalLM, ids: list[int], layers: list[int]) -> list[LayerInspection]:
    """Routing and DSA maps of `layers` for one prompt, from a single forward pass."""
    model.eval()
    x = torch.tensor([ids], device=model.lm_head.weight.device)
    rec = _Recorder(model)
    try:
        model(x)
    finally:
        rec.remove()
    out = []
    for i in layers:
        item = LayerInspection(i)
        if i in rec.moe:
            item.routing = _routing(rec.moe[i], model.config.n_routed_experts)
        if model.config.use_dsa:
            item.dsa = _dsa(model, i, rec)
        out.append(item)
    return out


@torch.inference_mode()
def mtp_drafts(model: CausalLM, ids: list[int], prompt_len: int, depth: int) -> MTPInspection:
    """The greedy drafts of speculative decoding with `depth` draft tokens, step by step, over
    `ids` = prompt + greedy continuation. Depth k at position i reads (h^{k-1}_i, t_{i+k}) and
    predicts t_{i+k+1}; a step at n (t_n the last emitted token) drafts from position n-1."""
    x = torch.tensor([ids], device=model.lm_head.weight.device)
    L, stored = len(ids), model.config.num_nextn_predict_layers
    h = model(x).hidden_states
    guesses = []  # guesses[k-1][i]: depth k's prediction of t_{i+k+1}
    for k in range(1, depth + 1):
        logits, h = model.mtp_step(min(k, stored), h[:, : L - k], x[:, k:])
        guesses.append(logits[0].argmax(-1).tolist())
    stats, steps = SpeculativeStats(depth), []
    n, emitted = prompt_len, 1  # the first new token comes from the prompt's logits, undrafted
    while emitted < L - prompt_len:
        count = min(depth, L - prompt_len - emitted - 1)
        if count == 0:  # the last token: a plain step, as the decoder takes it
            n, emitted = n + 1, emitted + 1
            continue
        drafts = [guesses[k - 1][n - 1] for k in range(1, count + 1)]
        accepted = 0
        while accepted < count and drafts[accepted] == ids[n + 1 + accepted]:
            accepted += 1
        stats.record(count, accepted)
        # drafts after the first rejection are not verified (and teacher forcing fed them other tokens)
        steps.append(DraftStep(n, drafts[: accepted + 1], accepted, ids[n + 1 : n + accepted + 2]))
        n, emitted = n + accepted + 1, emitted + accepted + 1
    return MTPInspection(
        depth, steps, stats.acceptance, stats.accepted, stats.verified, stats.tokens_per_step
    )


def cache_bytes(model: CausalLM, prompt_tokens: int) -> dict:
    """MLA cache per token in the model's dtype (glmlab.accounting), and for this prompt."""
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(model.lm_head.weight.dtype, "bf16")
    per_token = kv_cache_bytes_per_token(model.config, dtype)
    return {"dtype": dtype, "per_token": per_token, "prompt_tokens": prompt_tokens,
            "prompt_latent_bytes": per_token["total"] * prompt_tokens,
            "prompt_expanded_bytes": per_token["expanded"] * prompt_tokens}  # fmt: skip


def inspect(loaded, prompt: str, *, layer: int | None = None, max_new_tokens: int = 24) -> Inspection:
    """Everything `glmlab inspect` shows, for a loaded checkpoint (glmlab.checkpoint.load_model)."""
    from glmlab.generate import Generator

    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise GlmlabError(f"{loaded.path} has no tokenizer: inspect needs one to read the prompt")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise GlmlabError("the prompt is empty: give at least one token of text")
    context = model.config.max_position_embeddings
    if len(ids) + max_new_tokens > context:
        raise GlmlabError(f"the prompt ({len(ids)} tokens) + {max_new_tokens} new tokens exceed the model's "
                          f"context {context}: shorten the prompt")  # fmt: skip
    layers = inspect_layers(model, ids, check_layers(model, layer))
    result = Inspection(loaded.config.name, prompt, ids, token_strings(tokenizer, ids), layers,
                        cache_bytes(model, len(ids)))  # fmt: skip
    if len(model.mtp) and max_new_tokens > 1:
        continuation = Generator(model, tokenizer).generate(ids, max_new_tokens).ids
        result.continuation = continuation
        if len(continuation) > 1:
            result.mtp = mtp_drafts(
                model, ids + continuation, len(ids), model.config.num_nextn_predict_layers
            )
    return result
