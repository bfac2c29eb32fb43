"""FLOP, parameter and roofline counts against hand counts."""

import numpy as np
import pytest
from conftest import make_cluster, make_gpu, make_layer

from secmoe_sim.plan import costs
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.dense import dense_params, dense_plan
from secmoe_sim.plan.kernel_time import kernel_time_s, launch_time_s
from secmoe_sim.plan.sectional import sectional_params, sectional_plan
from secmoe_sim.plan.token_moe import token_moe_params, token_moe_plan
from secmoe_sim.spec.hardware import EfficiencyPoint
from secmoe_sim.spec.workload import DenseArchitecture, PreExpertBlock, SectionalMoEArchitecture, TokenMoEArchitecture


def test_attention_block_flops_by_hand():
    layer = make_layer(d_model=16, seq_len=8, heads=2, ffn_multiplier=4)
    ops = costs.attention_block(8, 16, 2, layer, with_ffn=True)
    assert [op.name for op in ops] == [
        "norm",
        "qkv",
        "attention",
        "out_proj",
        "residual",
        "norm",
        "ffn",
        "activation",
        "residual",
    ]
    norm, qkv, scores, out, residual, _, ffn, activation, _ = ops
    assert (norm.flops, norm.traffic_bytes) == (5 * 8 * 16, 2 * 8 * 16 * 4)  # fp32
    assert (residual.flops, residual.traffic_bytes) == (8 * 16, 3 * 8 * 16 * 4)
    assert (activation.flops, activation.traffic_bytes) == (8 * 8 * 64, 2 * 8 * 64 * 4)
    assert all(op.primitive == "memory" for op in (norm, residual, activation))
    assert qkv.flops == 2 * 3 * 8 * 16 * 16 == 12288
    assert scores.flops == 2 * 2 * 8 * 8 * 16 == 4096
    assert out.flops == 2 * 8 * 16 * 16 == 4096
    assert ffn.flops == 2 * 2 * 4 * 8 * 16 * 16 == 32768


def test_causal_halves_scores_and_materialized_adds_score_traffic():
    flash = costs.attention_scores(8, 16, 2, make_layer(causal=False), 4)
    causal = costs.attention_scores(8, 16, 2, make_layer(causal=True), 4)
    materialized = costs.attention_scores(8, 16, 2, make_layer(attention="materialized"), 4)
    assert causal.flops == flash.flops / 2
    assert materialized.traffic_bytes - flash.traffic_bytes == 4 * 2 * 8 * 8 * 4
    assert materialized.workspace_bytes == 2 * 8 * 8 * 4 and flash.workspace_bytes == 0


def test_expert_section_flops_follow_the_design_table():
    layer = make_layer(ffn_multiplier=2)
    n, w = 32, 16
    kernels = {k.name: k for k in costs.expert_section(n, w, 1, layer, section_ffn=True)}
    assert kernels["expert.qkv"].flops == 2 * 3 * n * w**2
    assert kernels["expert.attention"].flops == 2 * 2 * n**2 * w
    assert kernels["expert.out_proj"].flops == 2 * n * w**2
    assert kernels["expert.ffn"].flops == 2 * 2 * 2 * n * w**2
    assert kernels["expert.ffn"].group == "projection"


def test_parameter_counts():
    layer = make_layer(d_model=64, ffn=True, ffn_multiplier=4)
    d = 64
    assert dense_params(layer, DenseArchitecture(kind="dense")) == 4 * d * d + 8 * d * d
    assert dense_params(layer, DenseArchitecture(kind="dense", blocks=2)) == 2 * (4 * d * d + 8 * d * d)
    assert token_moe_params(layer, TokenMoEArchitecture(kind="token_moe", num_experts=8)) == 4 * d * d + d * 8 + 8 * 8 * d * d
    half_width = TokenMoEArchitecture(kind="token_moe", num_experts=8, top_k=2, expert_ffn_multiplier=2)
    assert token_moe_params(layer, half_width) == 4 * d * d + d * 8 + 8 * 4 * d * d
    # 4 experts of width 16 with section FFN, pre-expert (attention + FFN at full width) and mixing
    w = 16
    arch = SectionalMoEArchitecture(kind="sectional_moe", section_ffn=True, mixing=True, min_section_width=1)
    assert sectional_params(layer, arch, 4) == 4 * (4 * w * w + 8 * w * w) + (4 * d * d + 8 * d * d) + d * d
    attention_only = arch.model_copy(update={"pre_expert": PreExpertBlock(ffn=False)})
    assert sectional_params(layer, attention_only, 4) == 4 * (4 * w * w + 8 * w * w) + 4 * d * d + d * d


def test_projection_flops_fall_as_one_over_e_and_scores_do_not():
    layer = make_layer(d_model=256, seq_len=64, batch=4)
    cluster = make_cluster(gpus_per_node=4)
    arch = SectionalMoEArchitecture(kind="sectional_moe", pre_expert=PreExpertBlock(enabled=False), min_section_width=16)

    def group_flops(e, group):
        plan = sectional_plan(layer, arch, cluster, e)
        return sum(k.flops for p in plan.programs for k in p if isinstance(k, Kernel) and k.group == group)

    assert group_flops(4, "projection") == pytest.approx(group_flops(1, "projection") / 4)
    assert group_flops(16, "projection") == pytest.approx(group_flops(1, "projection") / 16)
    assert group_flops(16, "scores") == pytest.approx(group_flops(1, "scores"))


def test_sectional_e1_without_pre_expert_has_dense_flops():
    for ffn in (False, True):
        layer = make_layer(ffn=ffn, causal=True)
        cluster = make_cluster(gpus_per_node=2)
        arch = SectionalMoEArchitecture(kind="sectional_moe", pre_expert=PreExpertBlock(enabled=False), section_ffn=ffn)
        sectional = sectional_plan(layer, arch, cluster, 1)
        dense = dense_plan(layer, DenseArchitecture(kind="dense"), cluster)
        assert sectional.flops == pytest.approx(dense.flops, rel=1e-12)
        assert sectional.params == dense.params


def test_forward_backward_triples_linear_flops_and_attention_takes_three_and_a_half():
    """Backward: 2x the forward of every op, 2.5x for fused attention (FlashAttention-2's count)."""
    cluster = make_cluster(gpus_per_node=2)
    arch = SectionalMoEArchitecture(kind="sectional_moe", min_section_width=16)
    forward = sectional_plan(make_layer(), arch, cluster, 2)
    both = sectional_plan(make_layer(passes="forward_backward"), arch, cluster, 2)

    def attention_flops(plan) -> float:
        return sum(
            k.flops
            for p in plan.programs
            for k in p
            if isinstance(k, Kernel) and k.primitive == "attention" and not k.is_backward
        )

    attention = attention_flops(forward)
    assert attention > 0
    assert both.flops == pytest.approx(3 * (forward.flops - attention) + 3.5 * attention)


def test_token_moe_flops_count_kept_tokens_top_k_times():
    layer = make_layer(d_model=64, seq_len=128, batch=4, ffn_multiplier=4)
    cluster = make_cluster(gpus_per_node=4)
    arch = TokenMoEArchitecture(kind="token_moe", num_experts=4, top_k=2, capacity_factor=100.0)
    plan = token_moe_plan(layer, arch, cluster, np.random.default_rng(0))
    expert_flops = sum(k.flops for p in plan.programs for k in p if isinstance(k, Kernel) and k.name == "expert.ffn")
    assert plan.dropped_tokens == 0
    assert expert_flops == 2 * 2 * 4 * 64 * 64 * (4 * 128 * 2)


def test_roofline_time_and_efficiency_table():
    gpu = make_gpu(
        peak=1e12,
        memory_bandwidth=1e9,
        launch=5e-6,
        table=(EfficiencyPoint(flops=1e6, efficiency=0.25), EfficiencyPoint(flops=1e10, efficiency=0.75)),
    )
    compute_bound = Kernel("gemm", "projection", flops=1e10, traffic_bytes=1.0)
    assert kernel_time_s(compute_bound, gpu, "fp32") == pytest.approx(1e10 / (0.75 * 1e12))
    middle = Kernel("gemm", "projection", flops=1e8, traffic_bytes=1.0)  # halfway in log(FLOPs)
    assert kernel_time_s(middle, gpu, "fp32") == pytest.approx(1e8 / (0.5 * 1e12))
    memory_bound = Kernel("copy", "pre", flops=1.0, traffic_bytes=1e6)
    assert kernel_time_s(memory_bound, gpu, "fp32") == pytest.approx(1e-3)
    assert launch_time_s(Kernel("x", "pre", 1, 1, launches=3), gpu) == pytest.approx(15e-6)


def test_weight_bytes_of_an_op_over_many_sequences_are_counted_once():
    """One GEMM over S sequences reads its weights once; its activations S times; E experts' copies E times."""
    one = costs.qkv_projection(64, 128, 2)
    weights = 3 * 128**2 * 2
    assert one.weight_bytes == weights
    over = one.scaled(8)
    assert over.traffic_bytes == pytest.approx((one.traffic_bytes - weights) * 8 + weights)
    assert over.flops == pytest.approx(one.flops * 8) and over.weight_bytes == weights
    experts = one.scaled(8 * 4, weight_copies=4)  # 4 experts, 8 sequences each, as one op
    assert experts.traffic_bytes == pytest.approx((one.traffic_bytes - weights) * 32 + 4 * weights)
    assert one.sharded(2).weight_bytes == weights / 2 and one.backward().weight_bytes == 2 * weights


def test_rotary_and_the_section_out_projection_are_switches():
    rotary = costs.attention_block(8, 16, 2, make_layer(rotary=True), with_ffn=False)
    assert [op.name for op in rotary] == ["norm", "qkv", "rotary", "attention", "out_proj", "residual"]
    assert rotary[2].flops == 6 * 8 * 16 and rotary[2].traffic_bytes == 5 * 8 * 16 * 4
    layer = make_layer(d_model=64, seq_len=16, heads=4)
    with_out = costs.expert_section(16, 16, 1, layer, section_ffn=False)
    without = costs.expert_section(16, 16, 1, layer, section_ffn=False, out_projection_too=False)
    assert [op.name for op in without] == ["expert.norm", "expert.qkv", "expert.attention", "expert.residual"]
    assert {op.group for op in with_out} == {"elementwise", "projection", "scores"}
    arch = SectionalMoEArchitecture(kind="sectional_moe", min_section_width=16)
    no_out = arch.model_copy(update={"section_out_projection": False})
    assert sectional_params(layer, arch, 4) - sectional_params(layer, no_out, 4) == 4 * 16**2
