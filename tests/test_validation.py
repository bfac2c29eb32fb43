"""alpha, validate, recommend and report on a tiny scenario: files written, tables sane, figures drawn."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from secmoe_sim import load_scenario
from secmoe_sim.analysis.recommend import what_ifs
from secmoe_sim.analysis.validation import run_validation, variants
from secmoe_sim.cli import main
from secmoe_sim.report.validation import write_validation
from secmoe_sim.report.validation_report import write_validation_report

TINY = str(Path(__file__).parent / "data" / "tiny_validation.yaml")


def test_alpha_command_writes_json_per_mode_and_view(tmp_path, capsys):
    assert main(["alpha", TINY, "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "alpha.json").read_text())
    keys = {(m["sweep_mode"], m["view"]) for m in document["measurements"]}
    # a fixed_cluster case is measured once: its total view is the per-device view times G
    assert keys == {("fixed_cluster", "per_device"), ("expert_per_gpu", "per_device"), ("expert_per_gpu", "total")}
    assert {m["placement"] for m in document["measurements"]} == {"replicated", "node_local", "spread"}
    for m in document["measurements"]:
        assert m["e_opt_simulated"] in m["experts"] and m["e_opt_feasible"] in m["experts"]
        assert m["regret"] >= 0.0
        assert set(m["fits"]) >= {"quadratic", "linear", "log"}
    assert document["metadata"]["scenario"] == "tiny"
    assert (tmp_path / "overhead_fits.png").stat().st_size > 0
    assert "best form" in capsys.readouterr().out


def test_alpha_single_sweep_mode(tmp_path):
    assert main(["alpha", TINY, "--sweep-mode", "fixed_cluster", "--out", str(tmp_path)]) == 0
    modes = {m["sweep_mode"] for m in json.loads((tmp_path / "alpha.json").read_text())["measurements"]}
    assert modes == {"fixed_cluster"}


def test_variants_change_one_dimension():
    cases = variants(load_scenario(TINY))
    assert [c.varied for c in cases] == ["base", "seq_len", "seq_len", "d_model", "d_model"]
    assert sorted(c.scenario.workload.layer.seq_len for c in cases if c.varied == "seq_len") == [64, 256]
    assert all(c.scenario.workload.layer.d_model == 256 for c in cases if c.varied == "seq_len")


@pytest.mark.slow
def test_validate_writes_table_and_figures(tmp_path):
    scenario = load_scenario(TINY)
    validation = run_validation([scenario], with_variants=True, progress=False)
    written = write_validation(validation, tmp_path, [scenario])
    table = pd.read_csv(tmp_path / "validation.csv")
    assert len(table) == 5 * 3  # scenario variants x placements of its one fixed_cluster entry
    assert (table["regret"] >= 0).all() and (table["regret_hardware_alpha"] >= 0).all()
    required = {
        "objective",
        "regret",
        "regret_hardware_alpha",
        "regret_physical_form",
        "best_form",
        "r2",
        "n_points",
        "at_bound",
        "paper_form_holds",
    }
    assert required <= set(table.columns)
    assert set(table["objective"]) == {"wall_clock_s"}
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 6 and all(p.stat().st_size > 1000 for p in pngs)


@pytest.mark.slow
def test_report_readme_links_existing_figures(tmp_path):
    readme = write_validation_report([load_scenario(TINY)], tmp_path)
    text = readme.read_text()
    first = text.split("\n\n")[1]
    assert first.startswith("**Does the paper's `alpha E^2` hold?**") and "Does it pay off?" in first
    assert "## The paper's notation and ours" in text and "## Regret of each prediction" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 6
    for link in links:
        assert (tmp_path / link).is_file(), link


@pytest.mark.slow
def test_recommend_names_the_baselines_and_the_sensitivity(capsys):
    assert main(["recommend", TINY]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith(("Sectional pays off", "Sectional does not pay off"))
    assert "'token'" in out and "'dense'" in out and "speed only" in out
    assert "parameters" in out and "/token" in out
    assert "bandwidth x2" in out and "latency x0.5" in out and "software costs x0.5" in out


def test_sensitivity_changes_one_quantity_each():
    scenario = load_scenario(TINY)
    cluster, stack = scenario.hardware, scenario.stacks.default
    bandwidth, latency, overhead = what_ifs(scenario).values()
    assert bandwidth.hardware.intra_node.bandwidth_per_direction == 2 * cluster.intra_node.bandwidth_per_direction
    assert bandwidth.hardware.inter_node.nic_bandwidth_per_direction == 2 * cluster.inter_node.nic_bandwidth_per_direction
    assert bandwidth.stacks == scenario.stacks and latency.stacks == scenario.stacks
    assert latency.hardware.intra_node.latency == cluster.intra_node.latency / 2
    assert overhead.stacks.default.message_overhead == stack.message_overhead / 2
    # the stack moves out of the hardware (it named its own), nothing else about the cluster changes
    assert overhead.hardware == cluster.model_copy(update={"communication": None, "message_overhead": None})


def test_alpha_without_sectional_entry_is_a_clean_error(tmp_path, capsys):
    text = (
        Path(TINY)
        .read_text()
        .replace(
            "    - {kind: sectional_moe, label: sectional, min_section_width: 32, pre_expert: {enabled: true, sequence_reduction: 2}}\n",
            "",
        )
    )
    path = tmp_path / "no_sectional.yaml"
    path.write_text(text)
    assert main(["alpha", str(path)]) == 2
    assert "no sectional_moe entry" in capsys.readouterr().err
