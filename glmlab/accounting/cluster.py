"""`glmlab plan`: an analytic layout calculator for training a config on many GPUs.

For a layout (TP x PP x CP x DP GPUs, EP carved out of the TP x CP x DP ranks with experts not
tensor-parallel, as Megatron-LM and DeepSeek-V3 run it) it estimates, per GPU: memory (weights,
gradients, optimiser shards, activations under the chosen recomputation, the transient
unsharded weights of FSDP, and for inference the weights and KV cache), communication per
step by kind, the pipeline bubble, the step time and the MFU. Every count comes from
`glmlab.accounting` (parameters, FLOPs, activations, KV cache); nothing here imports torch.

Assumptions (docs/scaling.md, "How `glmlab plan` counts"): bf16 compute with fp32 master
weights, gradients reduced in fp32 and AdamW's two fp32 moments; ranks ordered TP innermost,
then CP, then DP, PP outermost; a group inside one node talks over NVLink, otherwise over the
per-GPU network bandwidth; tensor, expert and context-parallel traffic sits on the critical
path, data-parallel traffic overlaps with compute; a 1F1B pipeline schedule; uniform routing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from glmlab.accounting.flops import flops_report
from glmlab.accounting.memory import (
    StepDtypes,
    activation_bytes,
    backward_transient,
    cache_values_per_layer,
    kv_cache_bytes_per_token,
    routed_activation_bytes,
)
from glmlab.accounting.params import layer_params
from glmlab.config import RECOMPUTE, Config
from glmlab.errors import GlmlabError
from glmlab.plan import layer_kinds

GiB = 2**30


@dataclass(frozen=True)
class Gpu:
    """Dense bf16 peak, memory and the bandwidths one GPU has (bytes/s, one direction)."""

    name: str
    memory: float
    peak: float
    nvlink: float  # to the other GPUs of its node
    network: float  # to other nodes (its share of the node's NICs)
    per_node: int = 8


# Public datasheet figures; memory as torch reports it (GiB), NVLink per direction.
GPUS = {
    "h100": Gpu("H100 SXM", 80 * GiB, 989e12, 450e9, 50e9),
    "h200": Gpu("H200 SXM", 140 * GiB, 989e12, 450e9, 50e9),
    "h800": Gpu("H800 SXM", 80 * GiB, 989e12, 200e9, 50e9),
    "a100": Gpu("A100 SXM 80GB", 80 * GiB, 312e12, 300e9, 25e9),
    "b200": Gpu("B200", 180 * GiB, 2250e12, 900e9, 50e9),
}

SHARDING = ("fsdp", "zero1", "none")
MOMENT_BYTES = {"adamw": 8, "muon": 4}  # AdamW's two fp32 moments, Muon's one momentum


def state_bytes(sharding: str, optimizer: str) -> tuple[tuple[int, bool], ...]:
    """Bytes per parameter held for training, (size, divided over the sharding group?) for the
    resident weights, the gradients and the optimiser. fsdp: fp32 master shard, fp32 gradient
    shard, moments (the bf16 copies are transient); zero1 (Megatron's distributed optimizer):
    bf16 weights and fp32 gradients everywhere, master weights and moments sharded; none:
    everything replicated."""
    moments = MOMENT_BYTES[optimizer]
    if sharding == "fsdp":
        return (4, True), (4, True), (moments, True)
    return (2, False), (4, False), (4 + moments, sharding == "zero1")


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    cp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def edp(self) -> int:
        """Replicas of each expert: the TP x CP x DP ranks of a stage over EP."""
        return self.tp * self.cp * self.dp // self.ep

    def __str__(self) -> str:
        return f"TP{self.tp} PP{self.pp} CP{self.cp} DP{self.dp} EP{self.ep}"


@dataclass(frozen=True)
class PlanOptions:
    seq_len: int
    global_batch: int  # sequences per optimiser step
    micro_batch: int = 1  # sequences per forward pass on one pipeline
    recompute: str = "none"
    sharding: str = "fsdp"
    gpu: Gpu = GPUS["h200"]
    efficiency: float = 0.8  # share of the peak the matrix products reach (H200 here: 790 of 989)
    optimizer: str = "adamw"
    mtp: bool = True
    # the busiest EP rank's routed (token, expert) pairs over the mean: with EP every MoE layer waits
    # for it (1.0: uniform routing; 1.20-1.33 measured on two H200s, docs/scaling.md)
    ep_imbalance: float = 1.0


@dataclass
class Plan:
    layout: Layout
    options: PlanOptions
    memory: dict[str, float] = field(default_factory=dict)  # bytes per GPU, worst stage
    inference: dict[str, float] = field(default_factory=dict)
    comm_bytes: dict[str, float] = field(default_factory=dict)  # sent per GPU per step
    comm_seconds: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    micro_batches: int = 0
    bubble: float = 0.0
    mfu: float = 0.0
    tokens_per_s: float = 0.0

    @property
    def fits(self) -> bool:
        return self.memory["total"] <= self.options.gpu.memory

    def to_dict(self) -> dict:
        options = asdict(self.options)
        options["gpu"] = asdict(self.options.gpu)
        return {
            "layout": asdict(self.layout) | {"gpus": self.layout.gpus, "edp": self.layout.edp},
            "options": options, "fits": self.fits, "memory": self.memory, "inference": self.inference,
            "comm_bytes": self.comm_bytes, "comm_seconds": self.comm_seconds, "times": self.times,
            "micro_batches": self.micro_batches, "bubble": self.bubble, "mfu": self.mfu,
            "tokens_per_s": self.tokens_per_s,
        }  # fmt: skip


def gpu_named(name: str) -> Gpu:
    if name not in GPUS:
        raise GlmlabError(f"unknown --gpu '{name}': choose one of {', '.join(GPUS)}")
    return GPUS[name]


def _split(n: int, parts: int) -> list[range]:
    """n items in `parts` contiguous runs, the first ones one longer when n does not divide."""
    base, extra = divmod(n, parts)
    out, at = [], 0
    for i in range(parts):
        size = base + (i < extra)
        out.append(range(at, at + size))
        at += size
    return out


@dataclass
class _Stage:
    """What one pipeline stage holds: parameters split into tensor-parallel ('dense') and routed
    expert ones, its layers, and whether it carries the embedding or the head and MTP."""

    dense: float = 0.0
    experts: float = 0.0
    largest_unit: float = 0.0  # the biggest FSDP unit (a layer, or the embedding / head)
    layers: int = 0
    moe_layers: int = 0
    first: bool = False
    last: bool = False


def _stages(cfg: Config, pp: int, mtp: bool) -> list[_Stage]:
    m = cfg.model
    kinds = layer_kinds(m)
    if pp > len(kinds):
        raise GlmlabError(f"--pp {pp} exceeds the {len(kinds)} layers: use at most {len(kinds)} stages")
    stages = []
    for i, span in enumerate(_split(len(kinds), pp)):
        st = _Stage(first=i == 0, last=i == pp - 1, layers=len(span))
        for j in span:
            moe = kinds[j].moe
            p = layer_params(m, moe, kinds[j].indexer)
            routed = p.get("routed_experts", 0)
            st.dense += sum(p.values()) - routed
            st.experts += routed
            st.moe_layers += moe
            st.largest_unit = max(st.largest_unit, sum(p.values()) - routed)
        embed = m.vocab_size * m.hidden_size
        if st.first:
            st.dense += embed
            st.largest_unit = max(st.largest_unit, embed)
        if st.last:
            head = 0 if m.tie_word_embeddings else embed
            st.dense += head + m.hidden_size
            # the embedding and head of a one-stage model are one FSDP unit (the root module)
            st.largest_unit = max(st.largest_unit, head + (embed if st.first else 0))
            for _ in range(m.num_mtp_modules if mtp else 0):
                p = layer_params(m, m.mtp_uses_moe, m.use_dsa)
                routed = p.get("routed_experts", 0)
                st.dense += sum(p.values()) - routed + 2 * m.hidden_size**2 + 3 * m.hidden_size
                st.experts += routed
                st.moe_layers += m.mtp_uses_moe
        stages.append(st)
    return stages


def check_layout(cfg: Config, layout: Layout, opts: PlanOptions) -> None:
    """Reject a layout that cannot run this config, naming the constraint."""
    m = cfg.model
    for name in ("tp", "pp", "cp", "dp", "ep"):
        if getattr(layout, name) < 1:
            raise GlmlabError(f"--{name} must be at least 1, got {getattr(layout, name)}")
    if m.num_attention_heads % layout.tp:
        raise GlmlabError(f"--tp {layout.tp} does not divide the {m.num_attention_heads} attention heads")
    if m.n_routed_experts % layout.ep:
        raise GlmlabError(f"--ep {layout.ep} does not divide the {m.n_routed_experts} routed experts")
    if (layout.tp * layout.cp * layout.dp) % layout.ep:
        raise GlmlabError(f"--ep {layout.ep} must divide TP x CP x DP = {layout.tp * layout.cp * layout.dp}"
                          " (experts live on the ranks of one pipeline stage)")  # fmt: skip
    if opts.seq_len % layout.cp:
        raise GlmlabError(f"--cp {layout.cp} does not divide the sequence length {opts.seq_len}")
    if opts.global_batch % (layout.dp * opts.micro_batch):
        raise GlmlabError(
            f"the global batch ({opts.global_batch} sequences) is not a multiple of DP x micro-batch "
            f"({layout.dp} x {opts.micro_batch}): change --batch or --dp"
        )
    if opts.sharding not in SHARDING:
        raise GlmlabError(f"--sharding must be one of {', '.join(SHARDING)}, got '{opts.sharding}'")
    if opts.optimizer not in MOMENT_BYTES:
        raise GlmlabError(f"optimizer must be one of {', '.join(MOMENT_BYTES)}, got '{opts.optimizer}'")
    if opts.recompute not in RECOMPUTE:
        raise GlmlabError(f"--recompute must be one of {', '.join(RECOMPUTE)}, got '{opts.recompute}'")
    if opts.ep_imbalance < 1:
        raise GlmlabError(
            f"--ep-imbalance is the busiest rank's load over the mean, at least 1, got {opts.ep_imbalance}"
        )


def _ring_bw(gpu: Gpu, span: int) -> float:
    """Bandwidth of a collective over a group whose ranks span `span` consecutive ranks."""
    return gpu.nvlink if span <= gpu.per_node else gpu.network


def _all_to_all_seconds(gpu: Gpu, bytes_off_rank: float, ep: int, stride: int) -> float:
    """All-to-all over `ep` ranks `stride` apart: the share to peers in the same node goes over
    NVLink, the rest over the network, both at once."""
    if ep == 1:
        return 0.0
    local = max(1, min(ep, gpu.per_node // max(stride, 1)))
    intra = bytes_off_rank * (local - 1) / (ep - 1)
    inter = bytes_off_rank - intra
    return max(intra / gpu.nvlink, inter / gpu.network)


# Activations' dtypes (accounting/memory.py): one GPU trains unsharded fp32 weights under bf16
# autocast (bf16 copies of fp32 inputs and weights); FSDP's mixed-precision policy, or resident bf16
# weights, gives bf16 weights and residual stream under autocast everywhere else.
ONE_GPU, SHARDED = StepDtypes(4, 2, True), StepDtypes(2, 2, True)


@dataclass(frozen=True)
class _Costs:
    """The layout-independent counts: FLOPs per token, activations of one micro-batch in either
    dtype regime, and the backward's first transients."""

    train: float
    forward: float
    routed_train: float  # the routed experts' share of `train` and `forward`
    routed_forward: float
    activations: dict[StepDtypes, dict[str, float]]
    transient: float


def _costs(cfg: Config, opts: PlanOptions) -> _Costs:
    S, mb = opts.seq_len, opts.micro_batch
    train, forward = (
        flops_report(cfg, S, mode, "glmlab", opts.mtp, device="cuda") for mode in ("train", "forward")
    )
    return _Costs(
        train.per_token,
        forward.per_token,
        train.by_component().get("routed_experts", 0.0) / train.tokens,
        forward.by_component().get("routed_experts", 0.0) / forward.tokens,
        {dt: activation_bytes(cfg, S, mb, dt, mtp=opts.mtp, device="cuda") for dt in (ONE_GPU, SHARDED)},
        backward_transient(cfg, S, mb, "bf16-mixed", "cuda", mtp=opts.mtp),
    )


def ep_rows_per_token(experts: int, k: int, ep: int, *, padded: bool = False) -> float:
    """Rows a token sends to other ranks under expert parallelism: padded, one per other rank;
    exact, one per other rank holding at least one of its k experts, with experts split evenly over
    `ep` ranks and routing uniform (rank r holds none of them with probability
    C(E - E/ep, k) / C(E, k))."""
    if ep <= 1:
        return 0.0
    if padded:
        return float(ep - 1)
    none_there = math.comb(experts - experts // ep, k) / math.comb(experts, k)
    return (ep - 1) * (1 - none_there)


def plan_layout(cfg: Config, layout: Layout, opts: PlanOptions, costs: _Costs | None = None) -> Plan:
    """Memory, communication and time of one training step of `cfg` under `layout`."""
    check_layout(cfg, layout, opts)
    costs = costs or _costs(cfg, opts)
    m, gpu, L = cfg.model, opts.gpu, layout
    plan = Plan(L, opts)
    d, S, mb = m.hidden_size, opts.seq_len, opts.micro_batch
    stages = _stages(cfg, L.pp, opts.mtp)
    micro = opts.global_batch // (L.dp * mb)
    plan.micro_batches = micro
    shard_dense, shard_experts = L.dp * L.cp, L.edp

    # ---- activations of one micro-batch, per GPU (sequence parallel: tokens split over TP and CP)
    regime = ONE_GPU if L.gpus == 1 and opts.sharding == "fsdp" else SHARDED
    act = costs.activations[regime]
    per_layer = act["layers"] / m.num_hidden_layers / (L.tp * L.cp)
    residual = regime.weights  # bytes per value of the residual stream a recomputed layer keeps
    layer_input = mb * S * d * residual / (L.tp * L.cp)
    depths = m.num_nextn_predict_layers if (opts.mtp and m.num_mtp_modules) else 0
    mtp_act = act["mtp"]
    if opts.recompute == "full" and depths:  # each depth keeps its input; one depth recomputed at a time
        mtp_act = act["mtp"] / depths + depths * mb * S * d * residual
    # the last stage also holds the logits into backward, then the head's or its first layer's
    # gradients (memory.backward_transient)
    head = (act["head"] + mtp_act + costs.transient) / (L.tp * L.cp)

    # the padded EP dispatch lays out every received row's k slots (expert_parallel.py): its experts
    # save ep times the buffers of the pairs a rank holds, per MoE layer
    k = m.num_experts_per_tok
    padded = L.ep > 1 and cfg.train.ep_dispatch == "padded"
    pairs = mb * S / (L.tp * L.cp) * k
    routed = lambda n: routed_activation_bytes(m, n, SHARDED, "cuda")  # noqa: E731
    slots_extra = routed(L.ep * pairs) - routed(pairs) if padded else 0.0

    worst: dict[str, float] = {}
    for i, st in enumerate(stages):
        dense, experts = st.dense / L.tp, st.experts / L.ep
        mem = {}
        parts = zip(
            ("weights", "gradients", "optimizer"), state_bytes(opts.sharding, opts.optimizer), strict=True
        )
        for key, (size, sharded) in parts:
            mem[key] = size * (
                dense / (shard_dense if sharded else 1) + experts / (shard_experts if sharded else 1)
            )
        # FSDP: two units' bf16 weights gathered (the one running, the one prefetched) and one
        # unit's fp32 gradients before their reduce-scatter, each unit with its layer's experts
        unit = st.largest_unit / L.tp + (st.experts / max(st.moe_layers, 1)) / L.ep
        mem["transient"] = (2 * 2 + 4) * unit if opts.sharding == "fsdp" else 0.0
        in_flight = min(L.pp - i, micro)  # 1F1B: stage i holds pp - i micro-batches
        # experts split by EP stay fp32 outside FSDP: autocast keeps a bf16 copy of each for backward
        copies = 2 * experts if L.ep > 1 and opts.sharding == "fsdp" else 0.0
        if opts.recompute == "full":
            stage_act = in_flight * st.layers * layer_input + per_layer + copies / max(st.moe_layers, 1)
            stage_act += slots_extra if st.moe_layers else 0.0
        else:
            stage_act = in_flight * (st.layers * per_layer + copies + st.moe_layers * slots_extra)
        mem["activations"] = stage_act + (head if st.last else 0.0)
        mem["total"] = sum(mem.values())
        if mem["total"] > worst.get("total", -1):
            worst = mem | {"stage": i, "params_dense": dense, "params_experts": experts}
    plan.memory = worst
    st = stages[worst["stage"]]
    dense, experts, moe_layers = worst.pop("params_dense"), worst.pop("params_experts"), st.moe_layers

    # ---- inference on the same layout: bf16 weights, no sharding, the latent KV cache
    kv = kv_cache_bytes_per_token(cfg, "bf16")
    kv_gpu = (kv["total"] * st.layers / m.num_hidden_layers + (kv["mtp"] if st.last else 0)) / L.cp
    weights = 2 * (dense + experts)
    plan.inference = {"weights": weights, "kv_bytes_per_token": kv_gpu,
                      "kv_tokens_fit": max(0.0, (gpu.memory - weights) / kv_gpu)}  # fmt: skip

    # ---- communication per GPU per step
    tokens = mb * S / (L.cp * L.tp)  # tokens of one micro-batch held by one GPU
    frac = lambda n: (n - 1) / n  # noqa: E731 (share of a sharded tensor living elsewhere)
    sent = {}
    if opts.sharding == "fsdp":  # gathered for forward and again for backward, per micro-batch
        params = dense * frac(shard_dense) + experts * frac(shard_experts)
        sent["fsdp_all_gather"] = micro * 2 * 2 * params
        sent["fsdp_reduce_scatter"] = micro * 4 * params
    elif opts.sharding == "zero1":
        params = dense * frac(shard_dense) + experts * frac(shard_experts)
        sent["zero1_reduce_scatter"] = 4 * params
        sent["zero1_all_gather"] = 2 * params
    else:
        sent["dp_all_reduce"] = 2 * 4 * (dense * frac(shard_dense) + experts * frac(shard_experts))
    # one row per (token, other rank holding one of its experts; padded: per other rank), in bf16,
    # with its k gates and local expert ids (fp32): dispatch and combine forward (again when the
    # layer is recomputed), and backward the same rows with the gates' gradient
    # (glmlab/parallel/expert_parallel.py)
    rows = micro * moe_layers * tokens * ep_rows_per_token(m.n_routed_experts, k, L.ep, padded=padded)
    forwards = 2 if opts.recompute == "full" else 1
    sent["ep_all_to_all"] = rows * (forwards + 1) * (2 * d * 2 + 8 * k)
    # per layer: two all-reduces (as all-gather + reduce-scatter) forward, two backward
    sent["tp_all_reduce"] = micro * st.layers * 4 * 2 * frac(L.tp) * tokens * d * 2
    # the K and V that ring attention passes round: MLA's expanded per-head K/V, GQA's K/V heads
    heads_kv = m.num_attention_heads * (m.qk_head_dim + m.v_head_dim)
    kv_width = (heads_kv if m.attention_type == "mla" else cache_values_per_layer(m)) / L.tp
    sent["cp_ring"] = micro * st.layers * 3 * (L.cp - 1) * mb * S / L.cp * kv_width * 2
    sent["pp_send"] = micro * 2 * tokens * d * 2 if L.pp > 1 else 0.0
    plan.comm_bytes = sent

    dp_span = L.tp * L.cp * L.dp
    secs = {k: 0.0 for k in sent}
    for k in ("fsdp_all_gather", "fsdp_reduce_scatter", "zero1_reduce_scatter", "zero1_all_gather",
              "dp_all_reduce"):  # fmt: skip
        if k in sent:
            secs[k] = sent[k] / _ring_bw(gpu, dp_span)
    secs["ep_all_to_all"] = _all_to_all_seconds(gpu, sent["ep_all_to_all"], L.ep, 1)
    secs["tp_all_reduce"] = sent["tp_all_reduce"] / _ring_bw(gpu, L.tp)
    secs["cp_ring"] = sent["cp_ring"] / _ring_bw(gpu, L.tp * L.cp)
    secs["pp_send"] = sent["pp_send"] / _ring_bw(gpu, dp_span + 1)
    plan.comm_seconds = secs

    # ---- time: compute at `efficiency` x peak, the bubble, exposed communication
    train, forward = costs.train, costs.forward
    step_tokens = opts.global_batch * S
    recomputed = opts.recompute == "full"
    executed = (train + (forward if recomputed else 0.0)) * step_tokens / L.gpus
    routed = (costs.routed_train + (costs.routed_forward if recomputed else 0.0)) * step_tokens / L.gpus
    waiting = (opts.ep_imbalance - 1) * routed if L.ep > 1 else 0.0  # for the busiest rank's experts
    compute = (executed + waiting) / (gpu.peak * opts.efficiency)
    plan.bubble = (L.pp - 1) / (micro + L.pp - 1)
    pipelined = compute / (1 - plan.bubble)
    dp_time = sum(v for k, v in secs.items() if k.split("_")[0] in ("fsdp", "zero1", "dp"))
    exposed = secs["ep_all_to_all"] + secs["tp_all_reduce"] + secs["cp_ring"] + secs["pp_send"]
    step = pipelined + exposed + max(0.0, dp_time - compute)
    plan.times = {"compute": compute, "with_bubble": pipelined, "exposed_comm": exposed,
                  "data_parallel_comm": dp_time, "step": step}  # fmt: skip
    plan.mfu = train * step_tokens / (L.gpus * gpu.peak * step)
    plan.tokens_per_s = step_tokens / step
    return plan


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def search_layouts(cfg: Config, gpus: int, opts: PlanOptions, fixed: dict[str, int | None]) -> list[Plan]:
    """Every layout of `gpus` GPUs (TP and CP inside a node, powers of two) that fits in memory,
    fastest first; `fixed` pins any of tp/pp/cp/dp/ep. Recomputation is tried only when a layout
    does not fit without it (unless the options ask for it)."""
    m, costs = cfg.model, _costs(cfg, opts)
    pow2 = [k for k in _divisors(gpus) if k & (k - 1) == 0 and k <= opts.gpu.per_node]
    found = []
    for tp in [fixed["tp"]] if fixed.get("tp") else pow2:
        for cp in [fixed["cp"]] if fixed.get("cp") else pow2:
            for pp in [fixed["pp"]] if fixed.get("pp") else _divisors(gpus):
                if gpus % (tp * cp * pp) or tp * cp > opts.gpu.per_node:
                    continue
                dp = gpus // (tp * cp * pp)
                if fixed.get("dp") and fixed["dp"] != dp:
                    continue
                eps = [fixed["ep"]] if fixed.get("ep") else _divisors(m.n_routed_experts)
                for ep in eps:
                    layout = Layout(tp, pp, cp, dp, ep)
                    plan = _first_fitting(cfg, layout, opts, costs)
                    if plan is not None:
                        found.append(plan)
    return sorted(found, key=lambda p: p.times["step"])


def _first_fitting(cfg: Config, layout: Layout, opts: PlanOptions, costs: _Costs) -> Plan | None:
    choices = [opts.recompute] if opts.recompute == "full" else list(RECOMPUTE)
    for recompute in choices:
        try:
            plan = plan_layout(cfg, layout, replace(opts, recompute=recompute), costs)
        except GlmlabError:
            return None
        if plan.fits:
            return plan
    return None


def complete_layout(gpus: int, *, tp: int | None = None, pp: int | None = None, cp: int | None = None,
                    dp: int | None = None, ep: int | None = None) -> Layout:  # fmt: skip
    """Fill DP (or check it) from the GPU count; unset degrees are 1."""
    tp, pp, cp, ep = tp or 1, pp or 1, cp or 1, ep or 1
    if gpus % (tp * pp * cp):
        raise GlmlabError(f"--gpus {gpus} is not a multiple of TP x PP x CP = {tp * pp * cp}")
    want = gpus // (tp * pp * cp)
    if dp is not None and dp != want:
        raise GlmlabError(f"--dp {dp} does not match --gpus {gpus} / (TP x PP x CP) = {want}: drop --dp")
    return Layout(tp, pp, cp, want, ep)


def plan_summary(cfg: Config, gpus: int, opts: PlanOptions, degrees: dict[str, int | None], *,
                 search: bool = False, top: int = 10) -> dict:  # fmt: skip
    """What `glmlab plan` prints: one layout (unset degrees 1, DP from the GPU count), or with
    `search` the `top` fastest layouts that fit, any degree given pinning the search."""
    if gpus < 1:
        raise GlmlabError(f"--gpus must be at least 1, got {gpus}")
    if search:
        plans = search_layouts(cfg, gpus, opts, degrees)[:top]
    else:
        plans = [plan_layout(cfg, complete_layout(gpus, **degrees), opts)]
    return {"name": cfg.name, "gpus": gpus, "search": search, "plans": [p.to_dict() for p in plans]}
