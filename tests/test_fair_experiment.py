"""A fair experiment: expert placements, the pre-expert block as a switch, baselines on equal terms,
the token-MoE capacity formula, and a recommendation that never picks what does not fit."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cluster, make_layer

from secmoe_sim.analysis.bounds import binding_limit
from secmoe_sim.analysis.recommend import recommend
from secmoe_sim.cli import main
from secmoe_sim.plan import costs
from secmoe_sim.plan.dense import dense_flops_per_token, dense_plan
from secmoe_sim.plan.routing import route
from secmoe_sim.plan.sectional import sectional_flops_per_token, sectional_plan
from secmoe_sim.plan.token_moe import expert_capacity, token_moe_plan
from secmoe_sim.report.run_table import run_table
from secmoe_sim.report.text import MAX_WIDTH
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import (
    DenseArchitecture,
    PreExpertBlock,
    SectionalMoEArchitecture,
    TokenMoEArchitecture,
    ZipfRouting,
)

TINY = Path(__file__).parent / "data" / "tiny_validation.yaml"


def tiny(**architecture) -> Scenario:
    """The tiny two-node scenario with one sectional entry (fields overridden)."""
    data = load_scenario(TINY).model_dump(mode="json")
    entry = {"kind": "sectional_moe", "label": "sectional", "min_section_width": 32, **architecture}
    data["workload"]["architectures"] = [entry]
    return Scenario.model_validate(data)


def rows(summary, placement):
    return summary[summary["placement"] == placement].set_index("num_experts")


def test_replicated_sends_nothing_and_has_the_flops_of_spread():
    summary = simulate(tiny(placement="all")).summary
    replicated, spread = rows(summary, "replicated"), rows(summary, "spread")
    assert (replicated["bytes_sent"] == 0).all() and (replicated["messages"] == 0).all()
    common = replicated.index.intersection(spread.index)
    assert len(common) >= 3
    assert np.allclose(replicated.loc[common, "flops"], spread.loc[common, "flops"], rtol=1e-12)
    assert (spread.loc[[e for e in common if e > 1], "bytes_sent"] > 0).all()


def test_node_local_on_one_node_equals_spread():
    scenario = load_scenario("h100-nvlink-8")
    summary = simulate(
        scenario.with_values(
            {
                "workload.architectures": [
                    {
                        "kind": "sectional_moe",
                        "label": "s",
                        "placement": "all",
                        "min_section_width": 256,
                        "pre_expert": {"sequence_reduction": 4},
                    }
                ]
            }
        )
    ).summary
    node_local, spread = rows(summary, "node_local"), rows(summary, "spread")
    columns = ["wall_clock_s", "compute_s", "exposed_communication_s", "bytes_sent", "messages", "peak_memory_bytes"]
    assert node_local[columns].equals(spread[columns])


def test_node_local_groups_never_cross_a_node():
    scenario = tiny(placement="node_local", experts=[8])  # 2 nodes of 4: groups of 4, two experts per GPU
    timeline = simulate(scenario).timeline
    transfers = timeline[timeline["kind"] == "transfer"]
    assert not transfers.empty
    assert ((transfers["src"] // 4) == (transfers["dst"] // 4)).all()
    spread = simulate(tiny(placement="spread", experts=[8])).timeline
    crossing = spread[(spread["kind"] == "transfer") & ((spread["src"] // 4) != (spread["dst"] // 4))]
    assert not crossing.empty  # spread groups of 8 straddle the two nodes


def test_replicated_on_g_gpus_equals_g_independent_one_gpu_runs():
    layer = make_layer(d_model=128, seq_len=64, batch=8, heads=4, ffn=True)
    arch = SectionalMoEArchitecture(
        kind="sectional_moe",
        placement="replicated",
        section_ffn=True,
        min_section_width=8,
        pre_expert=PreExpertBlock(sequence_reduction=2),
    )
    for experts in (1, 4, 16):
        whole = sectional_plan(layer, arch, make_cluster(gpus_per_node=4), experts, "replicated")
        alone = sectional_plan(layer.model_copy(update={"batch": 2}), arch, make_cluster(gpus_per_node=1), experts, "replicated")
        from secmoe_sim.engine import run_plan

        assert run_plan(whole).finished_at == pytest.approx(run_plan(alone).finished_at * 4, rel=1e-12)
        assert whole.flops == pytest.approx(4 * alone.flops, rel=1e-12)
        assert whole.weight_bytes_per_gpu[0] == alone.weight_bytes_per_gpu[0]


def test_switching_the_pre_expert_ffn_off_removes_exactly_its_sublayer_flops():
    layer = make_layer(d_model=128, seq_len=64, batch=4, heads=4, ffn=True, ffn_multiplier=4)
    with_ffn = SectionalMoEArchitecture(
        kind="sectional_moe", min_section_width=16, pre_expert=PreExpertBlock(sequence_reduction=2)
    )
    without = with_ffn.model_copy(update={"pre_expert": PreExpertBlock(sequence_reduction=2, ffn=False)})
    cluster = make_cluster(gpus_per_node=4)
    sublayer = costs.ffn_sublayer(layer.seq_len, layer.d_model, layer.ffn_multiplier, 4, "pre")  # norm, GEMMs, GELU, residual
    ffn_flops = layer.batch * sum(op.flops for op in sublayer)
    for experts in (1, 4, 8):
        difference = (
            sectional_plan(layer, with_ffn, cluster, experts).flops - sectional_plan(layer, without, cluster, experts).flops
        )
        assert difference == ffn_flops


def test_every_row_costs_its_wall_clock_times_its_gpus():
    for name in ("h100-nvlink-8", "h200-ib-32"):
        summary = simulate(load_scenario(name)).summary
        assert np.array_equal(summary["gpu_seconds"], summary["wall_clock_s"] * summary["num_gpus"])
        tokens = load_scenario(name).workload.layer
        expected = tokens.batch * tokens.seq_len / summary["wall_clock_s"] / summary["num_gpus"]
        assert np.allclose(summary["tokens_per_s_per_gpu"], expected, rtol=1e-12)


def test_expert_per_gpu_entries_get_dense_simulated_on_their_own_gpus():
    summary = simulate(load_scenario("h100-nvlink-8")).summary
    per_gpu = summary[summary["sweep_mode"] == "expert_per_gpu"]
    same_gpus = summary[summary["role"] == "same_gpus"]
    for gpus in set(per_gpu["num_gpus"]) - {8}:
        assert f"dense@{gpus}gpu" in set(same_gpus["label"])
    dense_64 = same_gpus[same_gpus["label"] == "dense@64gpu"].iloc[0]
    assert dense_64["num_gpus"] == 64 and dense_64["wall_clock_s"] < summary[summary["label"] == "dense"].iloc[0]["wall_clock_s"]


def test_the_sectional_layer_at_one_expert_is_the_dense_funnel_pair():
    layer = make_layer(d_model=128, seq_len=64, batch=4, heads=4, ffn=True)
    sectional = SectionalMoEArchitecture(kind="sectional_moe", section_ffn=True, pre_expert=PreExpertBlock(sequence_reduction=4))
    funnel = DenseArchitecture(kind="dense", blocks=2, sequence_reduction=4)
    assert sectional_flops_per_token(layer, sectional, 1) == pytest.approx(dense_flops_per_token(layer, funnel), rel=1e-12)
    plan = dense_plan(layer, funnel, make_cluster(gpus_per_node=4))
    assert plan.flops / plan.tokens == pytest.approx(dense_flops_per_token(layer, funnel), rel=1e-12)
    two_blocks = dense_plan(layer, DenseArchitecture(kind="dense", blocks=2), make_cluster(gpus_per_node=4))
    one_block = dense_plan(layer, DenseArchitecture(kind="dense"), make_cluster(gpus_per_node=4))
    assert two_blocks.flops == 2 * one_block.flops and two_blocks.params == 2 * one_block.params


def test_upsampling_keeps_n_tokens_at_the_cost_of_one_memory_pass():
    layer = make_layer(d_model=128, seq_len=64, batch=4, heads=4)
    plain = SectionalMoEArchitecture(kind="sectional_moe", min_section_width=16, pre_expert=PreExpertBlock(sequence_reduction=4))
    upsampled = plain.model_copy(update={"pre_expert": PreExpertBlock(sequence_reduction=4, upsample=True)})
    causal = plain.model_copy(update={"pre_expert": PreExpertBlock(sequence_reduction=4, pooling="causal_mean")})
    cluster = make_cluster(gpus_per_node=4)
    extra = sectional_plan(layer, upsampled, cluster, 4).flops - sectional_plan(layer, plain, cluster, 4).flops
    assert extra == layer.batch * layer.seq_len * layer.d_model  # one add per element of N tokens
    op = costs.upsample_residual(64, 4, 128, 4)
    assert op.traffic_bytes == (64 / 4 + 2 * 64) * 128 * 4
    assert sectional_plan(layer, causal, cluster, 4).flops == sectional_plan(layer, plain, cluster, 4).flops


def test_capacity_is_capacity_factor_times_top_k_times_tokens_over_experts():
    layer = make_layer(d_model=64, seq_len=256, batch=2)
    arch = TokenMoEArchitecture(
        kind="token_moe",
        num_experts=4,
        top_k=2,
        capacity_factor=1.0,
        routing=ZipfRouting(kind="zipf", exponent=1.5, shuffle_ranks=False),
    )
    cluster = make_cluster(gpus_per_node=2)
    tokens = layer.batch * layer.seq_len
    assert expert_capacity(arch, tokens) == 1.0 * 2 * 512 / 4 == 256
    plan = token_moe_plan(layer, arch, cluster, np.random.default_rng(7))
    # by hand, from the same draws: each expert keeps at most 256 of the 1024 (token, expert) picks
    routed = route(arch.routing, [256, 256], 4, 2, 1, np.random.default_rng(7))
    loads = routed.sum(axis=0)
    assert loads.sum() == 2 * tokens and loads.max() > 256  # the skew makes the capacity bind
    assert plan.dropped_tokens == int(np.maximum(loads - 256, 0).sum())


def test_an_entry_draws_the_same_routing_wherever_it_stands():
    scenario = load_scenario("h100-nvlink-8")
    token = [a for a in scenario.model_dump(mode="json")["workload"]["architectures"] if a["label"] == "token-moe"]
    alone = simulate(scenario.with_values({"workload.architectures": token})).summary
    together = simulate(scenario).summary
    columns = ["wall_clock_s", "bytes_sent", "dropped_tokens"]
    assert together[together["label"] == "token-moe"][columns].reset_index(drop=True).equals(alone[columns])


def test_recommend_never_picks_a_configuration_that_does_not_fit(tmp_path):
    data = load_scenario(TINY).model_dump(mode="json")
    data["hardware"]["gpu"]["memory_capacity"] = 4.5e6  # dense peaks at 4.46 MB; every sectional E at 4.59 MB or more
    data["workload"]["architectures"] = [
        {"kind": "sectional_moe", "label": "sectional", "min_section_width": 32, "pre_expert": {"sequence_reduction": 2}},
        {"kind": "dense", "label": "dense"},
    ]
    scenario = Scenario.model_validate(data)
    summary = simulate(scenario).summary
    assert summary[summary["architecture"] == "sectional_moe"]["oom"].all()
    assert not summary[summary["label"] == "dense"]["oom"].any()
    found = recommend(scenario, with_studies=False)
    assert found.best_sectional is None and not found.pays_off
    assert found.recommended is not None and found.recommended.label == "dense"
    assert {c.label for c in found.out_of_memory} == {"sectional"}
    path = tmp_path / "oom.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    assert main(["recommend", str(path), "--json"]) == 0


def test_recommend_json_has_the_documented_fields(capsys):
    assert main(["recommend", str(TINY), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert isinstance(document["pays_off"], bool)
    fields = {"label", "architecture", "num_experts", "placement", "wall_clock_s", "gpu_seconds", "oom", "at_bound"}
    assert fields <= set(document["recommended"])
    assert document["baselines"] and all(fields <= set(b) for b in document["baselines"])
    best, dense = document["best_sectional"], document["fastest_dense"]
    assert document["pays_off"] == (best["wall_clock_s"] < dense["wall_clock_s"])
    assert not document["recommended"]["oom"]


@pytest.mark.parametrize("command", ["analyze", "alpha"])
def test_analyze_and_alpha_speak_json(command, tmp_path, capsys):
    arguments = [command, str(TINY), "--json"] + (
        ["--out", str(tmp_path), "--sweep-mode", "fixed_cluster"] if command == "alpha" else []
    )
    assert main(arguments) == 0
    document = json.loads(capsys.readouterr().out)
    assert document


def test_an_optimum_at_the_narrowest_section_is_flagged():
    scenario = tiny(placement="replicated")
    largest = max(scenario.expert_counts(scenario.workload.architectures[0], "replicated"))
    arch = scenario.workload.architectures[0]
    assert isinstance(arch, SectionalMoEArchitecture)
    assert binding_limit(scenario, arch, "replicated", largest) == "min_section_width"
    assert binding_limit(scenario, arch, "replicated", 2) == ""
    listed = tiny(placement="replicated", experts=[2, 4])
    assert binding_limit(listed, listed.workload.architectures[0], "replicated", 4) == "experts_list"


def test_the_run_table_fits_a_100_column_terminal_and_says_what_is_held_equal():
    text = run_table(simulate(load_scenario("h100-nvlink-8")))
    assert max(len(line) for line in text.splitlines()) <= MAX_WIDTH
    for placement in ("replicated", "node_local", "spread"):
        assert placement in text
    assert "Held equal between rows" in text and "GPU-time" in text and "FLOP/token" in text and "params" in text
    assert "dense@" not in text.split("Where the time goes")[0].split("On other GPU counts")[0]
