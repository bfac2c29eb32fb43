"""The empirical alpha on synthetic hardware whose overhead shape is known by construction."""

import json

import numpy as np
import pytest

from secmoe_sim.analysis.alpha import measure, measure_alpha
from secmoe_sim.analysis.overhead_fit import STANDARD_FORMS, aicc, best_form, fit_all, fit_form, paper_form_holds, physical_form

FORMS = {form.name: form for form in STANDARD_FORMS}
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.scenario import Scenario

MESSAGE_COST_S = 20e-6  # per-message overhead + latency; bandwidth so high that bytes cost nothing
COLLECTIVES = 2  # scatter + gather, forward only


def synthetic_scenario(fabric: dict, mode: str = "expert_per_gpu") -> Scenario:
    """16 GPUs in one node, a compute-bound GPU with no launch cost, 16 sequences (even for every E).

    The capacity-1 port network (a port holds one whole message, overhead and latency included)
    makes the overhead's shape exact by construction.
    """
    return Scenario.model_validate(
        {
            "schema_version": 1,
            "name": "synthetic",
            "seed": 0,
            "network": {"model": "ports"},
            "hardware": {
                "gpu": {
                    "name": "ideal",
                    "peak_flops": {"fp32": "1 TFLOP/s"},
                    "memory_bandwidth": "1e30 B/s",
                    "memory_capacity": "1 TB",
                    "kernel_launch_overhead": 0,
                },
                "nodes": 1,
                "gpus_per_node": 16,
                "intra_node": fabric,
                "message_overhead": "19 us",
            },
            "workload": {
                "layer": {"d_model": 256, "seq_len": 256, "batch": 16, "heads": 4, "dtype": "fp32", "ffn": False},
                "architectures": [
                    {
                        "kind": "sectional_moe",
                        "min_section_width": 16,
                        "sweep_mode": mode,
                        "pre_expert": {"enabled": False},
                        "section_ffn": True,
                    }
                ],
            },
        }
    )


SERIALISED = {  # every pair crosses one host bridge, held by one message at a time
    "kind": "pcie",
    "link_bandwidth_per_direction": "1e30 B/s",
    "host_bridge_bandwidth_per_direction": "1e30 B/s",
    "latency": "1 us",
    "peer_to_peer": True,
    "gpus_per_switch": 1,
}
SWITCHED = {"kind": "nvswitch", "bandwidth_per_direction": "1e30 B/s", "latency": "1 us"}


def by_view(measurements, mode):
    return {m.view: m for m in measurements if m.sweep_mode == mode}


def test_serialised_medium_total_overhead_is_alpha_e_e_minus_1():
    measurements, _ = measure_alpha(synthetic_scenario(SERIALISED), sweep_modes=("expert_per_gpu",))
    total = by_view(measurements, "expert_per_gpu")["total"]
    alpha_true = COLLECTIVES * MESSAGE_COST_S
    experts = np.array(total.experts)
    assert np.allclose(total.overhead_s, alpha_true * experts * (experts - 1), rtol=1e-9)
    full = total.fits["quadratic_full"].coefficients
    assert full["alpha"] == pytest.approx(alpha_true, rel=1e-2)
    assert full["beta"] == pytest.approx(-alpha_true, rel=1e-2)
    assert total.best_form in ("quadratic", "quadratic_full")


def test_serialised_medium_numeric_optimum_matches_simulated_argmin():
    measurements, _ = measure_alpha(synthetic_scenario(SERIALISED), sweep_modes=("expert_per_gpu",))
    per_device = by_view(measurements, "expert_per_gpu")["per_device"]
    assert per_device.best_form in ("quadratic", "quadratic_full")
    assert 1 < per_device.e_opt_simulated < max(per_device.experts), "optimum must be interior for the test to mean something"
    feasible = np.array(per_device.experts)
    nearest = feasible[np.argmin(np.abs(np.log(feasible) - np.log(per_device.e_opt_best_form)))]
    assert nearest == per_device.e_opt_simulated


def test_switched_fabric_per_gpu_overhead_is_linear():
    measurements, _ = measure_alpha(synthetic_scenario(SWITCHED), sweep_modes=("expert_per_gpu",))
    per_device = by_view(measurements, "expert_per_gpu")["per_device"]
    experts = np.array(per_device.experts)
    assert np.allclose(per_device.overhead_s, COLLECTIVES * MESSAGE_COST_S * (experts - 1), rtol=1e-9, atol=1e-15)
    assert per_device.best_form == "linear"
    assert not per_device.paper_form_holds


def test_regret_is_zero_when_the_optima_agree():
    measurements, _ = measure_alpha(synthetic_scenario(SERIALISED), sweep_modes=("expert_per_gpu",))
    for m in measurements:
        if m.e_opt_feasible == m.e_opt_simulated:
            assert m.regret == 0.0
        else:
            assert m.regret > 0.0


def test_record_is_json_ready():
    measurements, _ = measure_alpha(synthetic_scenario(SERIALISED), sweep_modes=("fixed_cluster",))
    for m in measurements:
        record = json.loads(json.dumps(m.record(), allow_nan=False))
        for key in (
            "sweep_mode",
            "view",
            "alpha_s",
            "alpha_flop_equiv",
            "best_form",
            "r2",
            "e_opt_analytical",
            "e_opt_feasible",
            "e_opt_simulated",
            "regret",
        ):
            assert key in record


def test_fit_standard_errors_and_r2_on_noisy_quadratic():
    rng = np.random.default_rng(1)
    e = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    y = 3e-6 * e**2 + rng.normal(0, 1e-6, len(e))
    fit = fit_form(FORMS["quadratic"], e, y)
    assert fit.coefficients["alpha"] == pytest.approx(3e-6, rel=0.05)
    assert 0 < fit.standard_errors["alpha"] < 1e-7
    assert 0.99 < fit.r2 <= 1.0


def test_aicc_floor_and_undefined_cases():
    assert aicc(0.0, 6, 2, floor_variance=1e-12) == pytest.approx(6 * np.log(1e-12) + 4 + 12 / 3)
    assert aicc(1.0, 4, 3, floor_variance=0.0) == float("inf")


def test_exact_log_data_prefers_log():
    e = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    fits = fit_all(e, 5e-6 * np.log(e) + 1e-6)
    assert best_form(fits) == "log"


def test_constant_data_selects_the_constant_form():
    e = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    fits = fit_all(e, np.full(len(e), 7e-6))
    assert best_form(fits) == "constant"
    assert fits["constant"].coefficients["gamma"] == pytest.approx(7e-6)


def test_the_physical_form_recovers_its_own_parameters():
    e = np.array([1, 2, 4, 8, 16, 32, 64], dtype=float)
    groups = np.minimum(e, 8)  # messages stop growing once a group spans its 8 GPUs
    messages, traffic = 2 * (groups - 1), 2 * (groups - 1) / groups * 1e-4
    form = physical_form(lambda x: np.interp(np.log(x), np.log(e), messages), lambda x: np.interp(np.log(x), np.log(e), traffic))
    overhead = 5e-6 * messages + 1.0 * traffic + 3e-5
    fit = fit_form(form, e, overhead)
    assert fit.coefficients["per_message_s"] == pytest.approx(5e-6, rel=1e-6)
    assert fit.coefficients["traffic_factor"] == pytest.approx(1.0, rel=1e-6)
    assert fit.coefficients["gamma"] == pytest.approx(3e-5, rel=1e-6)
    assert best_form(fit_all(e, overhead, (form,))) == "physical"


def test_with_four_points_no_three_coefficient_form_is_ranked():
    e = np.array([1, 2, 4, 8], dtype=float)
    fits = fit_all(e, np.array([0.027, 3.12, 4.68, 5.51]) * 1e-3)  # plainly saturating
    assert not fits["quadratic_full"].ranked and not fits["linear"].ranked and not fits["log"].ranked
    assert fits["quadratic"].ranked and fits["constant"].ranked
    assert best_form(fits) in ("quadratic", "constant")


def test_a_poor_quadratic_never_makes_the_paper_form_hold():
    e = np.array([1, 2, 4, 8], dtype=float)
    fits = fit_all(e, np.array([0.027, 3.12, 4.68, 5.51]) * 1e-3)
    fits = {name: fit for name, fit in fits.items() if name != "constant"}  # leave the quadratic as the only ranked form
    assert best_form(fits) == "quadratic" and fits["quadratic"].r2 < 0.9
    assert not paper_form_holds(fits, "quadratic")
    good = fit_all(e, 4e-6 * e**2)
    assert paper_form_holds(good, best_form(good)) and good[best_form(good)].r2 >= 0.9


def test_the_total_view_judges_regret_in_gpu_seconds():
    scenario = synthetic_scenario(SWITCHED)
    arch = scenario.workload.architectures[0]
    summary = simulate(scenario).summary
    spread = summary[summary["placement"] == "spread"].sort_values("num_experts").copy()
    # hand-made: wall-clock keeps falling with E (more GPUs), GPU-seconds are lowest at E = 2
    spread["wall_clock_s"] = 1.0 / spread["num_experts"]
    spread["gpu_seconds"] = [5.0 if e != 2 else 1.0 for e in spread["num_experts"]]
    total = measure(spread, scenario, arch, "spread", "total")
    assert total.objective == "gpu_seconds" and total.e_opt_simulated == 2
    expected = spread.set_index("num_experts")["gpu_seconds"][total.e_opt_feasible] / 1.0 - 1.0
    assert total.regret == pytest.approx(expected)
    per_device = measure(spread, scenario, arch, "spread", "per_device")
    assert per_device.objective == "wall_clock_s" and per_device.e_opt_simulated == max(per_device.experts)


def test_an_optimum_at_the_narrowest_section_is_flagged_at_bound():
    measurements, _ = measure_alpha(synthetic_scenario(SWITCHED, mode="fixed_cluster"), sweep_modes=("fixed_cluster",))
    replicated = next(m for m in measurements if m.placement == "replicated")
    assert replicated.e_opt_simulated == max(replicated.experts) == 256 // 16
    assert replicated.at_bound == "min_section_width"
