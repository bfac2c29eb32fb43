"""Token routing (uniform, Zipf, grouped, counts), capacity drops, peak memory and OOM flags."""

from pathlib import Path

import numpy as np
import pytest
from conftest import make_cluster, make_layer

from secmoe_sim.errors import ScenarioError
from secmoe_sim.plan.routing import capacity_limited_counts, largest_remainder, route, top_k_counts
from secmoe_sim.plan.token_moe import token_moe_plan
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.workload import CountsRouting, GroupedRouting, TokenMoEArchitecture, UniformRouting, ZipfRouting

TINY = Path(__file__).parent / "data" / "tiny_validation.yaml"


@pytest.mark.parametrize(
    "routing",
    [
        UniformRouting(kind="uniform"),
        ZipfRouting(kind="zipf", exponent=1.2),
        GroupedRouting(kind="grouped", top_groups=2),
    ],
)
def test_token_counts_sum_to_tokens_times_top_k(routing):
    routed = route(routing, [1000, 3000, 0, 17], num_experts=16, top_k=4, groups=4, rng=np.random.default_rng(5))
    assert list(routed.sum(axis=1)) == [4000, 12000, 0, 68]


def test_zipf_with_exponent_zero_is_uniform():
    zipf = route(ZipfRouting(kind="zipf", exponent=0.0, shuffle_ranks=False), [5000, 5000], 8, 2, 1, np.random.default_rng(3))
    uniform = route(UniformRouting(kind="uniform"), [5000, 5000], 8, 2, 1, np.random.default_rng(3))
    assert (zipf == uniform).all()
    share = uniform.sum(axis=0) / uniform.sum()
    assert np.allclose(share, 1 / 8, atol=0.01)


def test_zipf_skews_load_by_rank():
    routed = route(ZipfRouting(kind="zipf", exponent=1.5, shuffle_ranks=False), [20000], 16, 1, 1, np.random.default_rng(0))[0]
    assert routed[0] > routed[1] > routed[4] > routed[15]
    weights = 1 / np.arange(1, 17) ** 1.5
    assert routed[0] / routed.sum() == pytest.approx(weights[0] / weights.sum(), rel=0.05)


def test_each_token_picks_distinct_experts():
    counts = top_k_counts(1000, np.ones(4), 4, np.random.default_rng(0))
    assert list(counts) == [1000] * 4  # top_k == experts: every token visits every expert once


def test_grouped_routing_uses_only_top_groups_per_token():
    # one token at a time: it may touch at most top_groups groups of 4 experts
    rng = np.random.default_rng(11)
    for _ in range(50):
        counts = route(GroupedRouting(kind="grouped", top_groups=2), [1], 16, 3, 4, rng)[0]
        touched_groups = {int(e) // 4 for e in np.flatnonzero(counts)}
        assert len(touched_groups) <= 2 and counts.sum() == 3


def test_counts_routing_reproduces_measured_loads():
    routed = route(CountsRouting(kind="counts", counts=[3, 1, 0, 4]), [50, 150], 4, 2, 1, np.random.default_rng(0))
    assert list(routed.sum(axis=0)) == [150, 50, 0, 200]
    assert list(routed[:, 0]) == [38, 112] or list(routed[:, 0]) == [37, 113]


def test_largest_remainder_sums_exactly():
    parts = largest_remainder(np.array([1.0, 1.0, 1.0]), 10)
    assert parts.sum() == 10 and sorted(parts) == [3, 3, 4]


def test_capacity_drops_match_a_hand_count():
    routed = np.array([[5, 1], [4, 2], [3, 0]])  # expert 0 asked for 12 tokens, expert 1 for 3
    kept = capacity_limited_counts(routed, capacity=7.9)
    assert kept.tolist() == [[5, 1], [2, 2], [0, 0]]
    # by hand: capacity floor(7.9) = 7; expert 0 keeps 5 (source 0) + 2 (source 1, full), drops 2 + 3;
    # expert 1 keeps all 3. Kept 10 of 15: 5 dropped.
    assert routed.sum() - kept.sum() == 5


def test_dropped_tokens_reach_the_summary():
    layer = make_layer(d_model=64, seq_len=128, batch=4)
    arch = TokenMoEArchitecture(
        kind="token_moe", num_experts=4, top_k=1, capacity_factor=0.5, routing=ZipfRouting(kind="zipf", exponent=2.0)
    )
    plan = token_moe_plan(layer, arch, make_cluster(gpus_per_node=4), np.random.default_rng(0))
    assert plan.dropped_tokens >= 4 * 128 // 2  # capacity is half the tokens: at least half are dropped


def test_counts_file_is_read_relative_to_the_scenario(tmp_path):
    text = TINY.read_text().replace(
        "{kind: token_moe, label: token, num_experts: 8, top_k: 2}",
        "{kind: token_moe, label: token, num_experts: 8, top_k: 2, routing: {kind: counts, file: loads.txt}}",
    )
    (tmp_path / "scenario.yaml").write_text(text)
    (tmp_path / "loads.txt").write_text("# measured tokens per expert\n10, 20, 30, 40\n50 60 70 80\n")
    scenario = load_scenario(tmp_path / "scenario.yaml")
    token = next(a for a in scenario.workload.architectures if a.name == "token")
    assert token.routing.counts == [10, 20, 30, 40, 50, 60, 70, 80]
    (tmp_path / "loads.txt").write_text("10 20 x\n")
    with pytest.raises(ScenarioError, match="token counts must be numbers"):
        load_scenario(tmp_path / "scenario.yaml")
    (tmp_path / "loads.txt").unlink()
    with pytest.raises(ScenarioError, match=r"routing\.file: cannot read token counts file 'loads.txt'"):
        load_scenario(tmp_path / "scenario.yaml")


def _memory_scenario(tmp_path, capacity_bytes):
    text = TINY.read_text().replace("memory_capacity: 16 GiB", f"memory_capacity: {capacity_bytes}")
    path = tmp_path / f"memory-{capacity_bytes}.yaml"
    path.write_text(text)
    return load_scenario(path)


def test_oom_flag_at_one_byte_over_capacity(tmp_path):
    summary = simulate(load_scenario(TINY)).summary
    peak = int(summary.loc[summary["label"] == "dense", "peak_memory_bytes"].iloc[0])
    fits = simulate(_memory_scenario(tmp_path, peak)).summary
    over = simulate(_memory_scenario(tmp_path, peak - 1)).summary
    assert not fits.loc[fits["label"] == "dense", "oom"].iloc[0]
    assert over.loc[over["label"] == "dense", "oom"].iloc[0]
    assert (over["wall_clock_s"] > 0).all(), "an OOM configuration is still simulated"


def test_materialized_scores_and_backward_need_more_memory():
    cluster = make_cluster(gpus_per_node=2)
    arch = TokenMoEArchitecture(kind="token_moe", num_experts=2, top_k=1)
    peaks = {}
    for attention in ("flash", "materialized"):
        for passes in ("forward", "forward_backward"):
            layer = make_layer(seq_len=1024, attention=attention, passes=passes)
            plan = token_moe_plan(layer, arch, cluster, np.random.default_rng(0))
            peaks[(attention, passes)] = max(plan.peak_memory_bytes(layer.has_backward))
    assert peaks[("materialized", "forward")] > peaks[("flash", "forward")]
    assert peaks[("flash", "forward_backward")] > peaks[("flash", "forward")]


def test_routing_draws_without_replacement_in_proportion_to_popularity():
    """Each token's top_k experts follow successive sampling without replacement: expert i is among a
    token's 2 of 4 with probability p_i + sum over j != i of p_j p_i / (1 - p_j); 200,000 tokens hold it
    within five standard errors."""
    from itertools import permutations

    p = np.array([0.4, 0.3, 0.2, 0.1])
    inclusion = np.zeros(4)
    for first, second in permutations(range(4), 2):
        inclusion[[first, second]] += p[first] * p[second] / (1 - p[first])
    tokens = 200_000
    counts = top_k_counts(tokens, p, 2, np.random.default_rng(3))
    error = np.sqrt(inclusion * (1 - inclusion) / tokens)
    assert np.all(np.abs(counts / tokens - inclusion) < 5 * error), (counts / tokens, inclusion)


def test_the_two_ways_of_taking_the_k_smallest_keys_agree():
    from secmoe_sim.plan.routing import ARGMIN_PASSES_MAX_K, smallest_k

    keys = np.random.default_rng(0).random((500, 64))
    for k in (1, 2, ARGMIN_PASSES_MAX_K, ARGMIN_PASSES_MAX_K + 1, 40):
        expected = np.sort(np.argsort(keys, axis=1)[:, :k], axis=1)
        assert (np.sort(smallest_k(keys.copy(), k), axis=1) == expected).all(), k


def test_steep_popularity_over_many_experts_keeps_finite_keys():
    """Zipf exponent 10 over 8,192 experts: the rarest popularities are below 1e-38, where 32-bit keys would
    overflow; the draw stays exact (the two most popular experts take nearly every pick)."""
    from secmoe_sim.plan.routing import popularity
    from secmoe_sim.spec.workload import ZipfRouting

    rng = np.random.default_rng(0)
    weights = popularity(ZipfRouting(kind="zipf", exponent=10.0, shuffle_ranks=False), 8192, rng)
    with np.errstate(all="raise"):
        counts = top_k_counts(10_000, weights, 2, rng)
    assert counts.sum() == 20_000 and counts[:2].sum() > 19_000 and counts[100:].sum() == 0
