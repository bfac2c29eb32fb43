"""The analytical model against brute force, numeric derivatives and the simulated compute."""

import numpy as np
import pytest
from conftest import make_cluster, make_gpu, make_layer

from secmoe_sim.analysis.analytical import (
    PER_DEVICE_VIEW,
    TOTAL_VIEW,
    CostModel,
    Overhead,
    alpha_flop_equivalent,
    cost_model,
    hardware_alpha_s,
    nearest_feasible,
    sectional_terms,
)
from secmoe_sim.engine import run_plan
from secmoe_sim.plan.sectional import sectional_plan
from secmoe_sim.spec.workload import PreExpertBlock, SectionalMoEArchitecture


@pytest.mark.parametrize("k_s, alpha_s", [(1.0, 1e-3), (0.05, 2e-6), (3.0, 0.4)])
def test_closed_form_e_opt_matches_brute_force(k_s, alpha_s):
    model = CostModel(TOTAL_VIEW, c0_s=0.7, a1_s=k_s, a2_s=0.0)
    overhead = Overhead(alpha_s)
    grid = np.linspace(0.01, 400, 2_000_001)
    brute = grid[np.argmin(model.total_s(grid, overhead))]
    assert model.e_opt(overhead) == pytest.approx((k_s / (2 * alpha_s)) ** (1 / 3))
    assert model.e_opt(overhead) == pytest.approx(brute, rel=1e-3)


@pytest.mark.parametrize("beta_s", [0.0, 1e-4, -1e-5])
def test_per_device_stationarity_is_a_zero_of_the_numeric_derivative(beta_s):
    model = CostModel(PER_DEVICE_VIEW, c0_s=0.0, a1_s=0.02, a2_s=0.3)
    overhead = Overhead(alpha_s=1e-5, beta_s=beta_s, gamma_s=1e-3)
    e_opt = model.e_opt(overhead)
    step = 1e-6 * e_opt
    derivative = (model.total_s(e_opt + step, overhead) - model.total_s(e_opt - step, overhead)) / (2 * step)
    assert model.stationarity(e_opt, overhead) == pytest.approx(0.0, abs=1e-9)
    assert derivative == pytest.approx(0.0, abs=1e-9)
    grid = np.linspace(0.5, 200, 400_001)
    assert e_opt == pytest.approx(grid[np.argmin(model.total_s(grid, overhead))], rel=1e-3)


def test_no_overhead_means_no_optimum():
    assert CostModel(TOTAL_VIEW, 1.0, 1.0, 0.0).e_opt(Overhead(0.0)) == float("inf")


def test_nearest_feasible_picks_the_cheaper_neighbour():
    model = CostModel(TOTAL_VIEW, c0_s=0.0, a1_s=1.0, a2_s=0.0)
    overhead = Overhead(1 / (2 * 6.0**3))  # continuous optimum at exactly 6
    choice = nearest_feasible(model.e_opt(overhead), [1, 2, 4, 8, 16], model, overhead)
    assert (choice.below, choice.above) == (4, 8)
    assert choice.best == min((4, 8), key=lambda e: model.total_s(e, overhead))


# --- the coefficients against the simulated compute -------------------------------------------------

COMPUTE_BOUND_GPU = make_gpu(peak=1e13, memory_bandwidth=1e20, launch=0.0)


def _arch(mode, **extra):
    return SectionalMoEArchitecture(
        kind="sectional_moe",
        sweep_mode=mode,
        min_section_width=16,
        pre_expert=PreExpertBlock(enabled=True, sequence_reduction=2),
        section_ffn=True,
        mixing=True,
        **extra,
    )


@pytest.mark.parametrize("num_experts", [1, 2, 4, 8, 16])
def test_fixed_cluster_per_device_compute_matches_simulation(num_experts):
    layer = make_layer(d_model=256, seq_len=64, batch=8, heads=4, ffn=True, causal=True)
    cluster = make_cluster(gpus_per_node=4, gpu=COMPUTE_BOUND_GPU)
    arch = _arch("fixed_cluster")
    model = cost_model(sectional_terms(layer, arch, cluster), PER_DEVICE_VIEW, "fixed_cluster", cluster.num_gpus)
    run = run_plan(sectional_plan(layer, arch, cluster, num_experts))
    assert max(summarize_compute(run)) == pytest.approx(model.compute_s(num_experts), rel=1e-9)


@pytest.mark.parametrize("num_experts", [1, 2, 4, 8])
def test_expert_per_gpu_per_device_compute_matches_simulation(num_experts):
    layer = make_layer(d_model=256, seq_len=64, batch=8, heads=4, ffn=True, passes="forward_backward")
    cluster = make_cluster(gpus_per_node=8, gpu=COMPUTE_BOUND_GPU)
    arch = _arch("expert_per_gpu")
    model = cost_model(sectional_terms(layer, arch, cluster), PER_DEVICE_VIEW, "expert_per_gpu", cluster.num_gpus)
    run = run_plan(sectional_plan(layer, arch, cluster, num_experts))
    assert len(run.finished_at) == num_experts
    assert max(summarize_compute(run)) == pytest.approx(model.compute_s(num_experts), rel=1e-9)


@pytest.mark.parametrize("num_experts", [1, 4, 16])
def test_total_view_compute_matches_the_sum_over_gpus(num_experts):
    layer = make_layer(d_model=256, seq_len=64, batch=8, heads=4, ffn=True)
    cluster = make_cluster(gpus_per_node=4, gpu=COMPUTE_BOUND_GPU)
    arch = _arch("fixed_cluster")
    model = cost_model(sectional_terms(layer, arch, cluster), TOTAL_VIEW, "fixed_cluster", cluster.num_gpus)
    run = run_plan(sectional_plan(layer, arch, cluster, num_experts))
    assert sum(summarize_compute(run)) == pytest.approx(model.compute_s(num_experts), rel=1e-9)


def summarize_compute(run):
    kernels = run.timeline[run.timeline["kind"] == "kernel"]
    busy = (kernels["finished_at"] - kernels["started_at"] - kernels["launch_s"]).groupby(kernels["gpu"]).sum()
    return list(busy)


def test_hardware_alpha_is_one_message_per_collective():
    layer = make_layer()
    cluster = make_cluster(gpus_per_node=4, latency=1e-6, overhead=4e-6)
    assert hardware_alpha_s(layer, cluster) == pytest.approx(2 * 5e-6)
    both = make_layer(passes="forward_backward")
    assert hardware_alpha_s(both, cluster) == pytest.approx(4 * 5e-6)


def test_alpha_flop_equivalent_uses_the_effective_rate():
    layer = make_layer(d_model=256, seq_len=64, batch=8, heads=4)
    cluster = make_cluster(gpus_per_node=4, gpu=make_gpu(peak=1e13, memory_bandwidth=1e20, efficiency=0.5))
    terms = sectional_terms(layer, _arch("fixed_cluster"), cluster)
    assert terms.effective_flops_per_s == pytest.approx(0.5e13, rel=1e-9)
    assert alpha_flop_equivalent(2e-6, terms) == pytest.approx(2e-6 * 0.5e13)


def test_hardware_alpha_of_a_single_device_uses_a_neighbour_on_the_same_node():
    single = make_cluster(gpus_per_node=1, latency=1e-6, overhead=4e-6)
    assert hardware_alpha_s(make_layer(), single) == pytest.approx(2 * 5e-6)
