"""The command line: run writes its five outputs, analyze and schema print, list names the scenarios."""

import json

import pandas as pd

from secmoe_sim.cli import main

RUN_OUTPUTS = {"summary.csv", "timeline.csv", "trace.json", "wall_clock_vs_experts.png", "metadata.json"}


def test_run_writes_all_outputs(tmp_path, capsys):
    assert main(["run", "rtx4090-pcie-8", "--out", str(tmp_path), "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert "sectional" in printed and "token-moe" in printed and "dense" in printed
    assert RUN_OUTPUTS <= {p.name for p in tmp_path.iterdir()}
    assert all((tmp_path / name).stat().st_size > 0 for name in RUN_OUTPUTS)
    summary = pd.read_csv(tmp_path / "summary.csv")
    required = {
        "scenario",
        "architecture",
        "label",
        "num_experts",
        "sweep_mode",
        "wall_clock_s",
        "compute_s",
        "launch_s",
        "communication_s",
        "exposed_communication_s",
        "peak_memory_bytes",
        "params",
        "flops",
        "num_events",
    }
    assert required <= set(summary.columns)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["seed"] == 7 and metadata["scenario"] == "rtx4090-pcie-8" and len(metadata["scenario_sha256"]) == 64
    trace = json.loads((tmp_path / "trace.json").read_text())
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert complete and all(e["dur"] >= 0 for e in complete)
    assert {e["ph"] for e in trace["traceEvents"]} >= {"M", "X", "s", "f"}


def test_seed_on_the_command_line_wins(tmp_path):
    main(["run", "rtx4090-pcie-8", "--out", str(tmp_path / "a"), "--seed", "1"])
    main(["run", "rtx4090-pcie-8", "--out", str(tmp_path / "b"), "--seed", "2"])
    a = pd.read_csv(tmp_path / "a" / "summary.csv").set_index("label")
    b = pd.read_csv(tmp_path / "b" / "summary.csv").set_index("label")
    assert a.loc["token-moe", "wall_clock_s"] != b.loc["token-moe", "wall_clock_s"]
    assert (a.loc["dense", "wall_clock_s"] == b.loc["dense", "wall_clock_s"]).all()


def test_analyze_prints_both_views(capsys):
    assert main(["analyze", "h100-nvlink-8"]) == 0
    out = capsys.readouterr().out
    assert "E_opt (total view)" in out and "E_opt (per_device view)" in out and "hardware estimate" in out


def test_analyze_with_given_alpha(capsys):
    assert main(["analyze", "h100-nvlink-8", "--alpha", "1 us"]) == 0
    assert "given with --alpha" in capsys.readouterr().out


def test_schema_is_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"hardware", "workload", "schema_version"} <= set(schema["properties"])


def test_list_names_shipped_scenarios(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("h100-nvlink-8", "a100-pcie-8", "h200-ib-32", "rtx4090-pcie-8"):
        assert name in out


def test_bad_option_value_is_one_line_exit_2(capsys):
    assert main(["analyze", "h100-nvlink-8", "--alpha", "3 GB"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_readme_scenario_example_loads(tmp_path):
    import re
    from pathlib import Path

    from secmoe_sim.spec.loading import load_scenario

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = next(block for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "schema_version" in block)
    path = tmp_path / "example.yaml"
    path.write_text(example)
    scenario = load_scenario(path)
    assert scenario.name == "my-cluster" and len(scenario.faults) == 3


def test_analyze_defines_every_symbol_it_prints(capsys):
    import re

    assert main(["analyze", "h100-nvlink-8"]) == 0
    out = capsys.readouterr().out
    body, _, symbols = out.partition("Symbols: ")
    used = set(re.findall(r"\b(C_pre|K|A|alpha|S_total|S_per_device|a1|a2|E_opt|params|FLOP/token)\b", body))
    assert {"C_pre", "K", "A", "alpha", "S_total", "S_per_device", "a1", "a2", "E_opt"} <= used
    defined = " ".join(symbols.split())
    for symbol in used:  # defined as "X: ...", "X(E) ..." or, for the pair, "a1, a2: ..."
        assert any(form in defined for form in (f"{symbol}:", f"{symbol}(E)", "a1, a2:" if symbol in ("a1", "a2") else "\0")), (
            symbol
        )
