"""Every way a scenario can be wrong ends in one ScenarioError of one line, and exit code 2.

Each ``tests/data/bad_*.yaml`` is a copy of a minimal valid scenario (one node of 12 GPUs, a
4096-wide layer) with exactly one thing wrong. Where the error belongs to a line of the file, that
line carries the comment ``# <- error``; the reported line number must be that line.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from secmoe_sim.cli import main
from secmoe_sim.errors import ScenarioError
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.loading import load_cluster, load_scenario, resolve_scenario_path
from secmoe_sim.spec.scenario import Scenario

DATA = Path(__file__).parent / "data"
MARKER = "# <- error"


@dataclass(frozen=True)
class Case:
    """What the error for one bad fixture must say."""

    field: str  # the field path in the message; "" where the error is about the whole file
    reason: str  # a distinctive fragment of the reason
    file: str | None = None  # the file the error names, when it is not the fixture (an included file)
    lines: tuple[int, ...] | None = None  # accepted lines where no marker applies (YAML syntax errors)
    line_optional: bool = False  # the marked line is known, but the loader may leave the line out


CASES: dict[str, Case] = {
    "bad_unknown_field.yaml": Case("hardware.gpu.colour", "unknown field 'colour'"),
    "bad_wrong_type.yaml": Case("workload.layer.d_model", "valid integer"),
    "bad_zero_bandwidth.yaml": Case("hardware.gpu.memory_bandwidth", "bandwidth must be positive, got 0"),
    "bad_negative_bandwidth.yaml": Case(
        "hardware.intra_node.bandwidth_per_direction", "bandwidth must be positive, got '-370 GB/s'"
    ),
    "bad_unknown_unit.yaml": Case("hardware.gpu.memory_bandwidth", "unknown unit 'GB/sec'"),
    "bad_wrong_dimension.yaml": Case(
        "hardware.intra_node.bandwidth_per_direction", "'1.5 us' is a duration, expected a bandwidth"
    ),
    "bad_experts_not_dividing.yaml": Case("workload.architectures[0].experts[0]", "E=3 does not divide d_model=4096"),
    "bad_experts_placement.yaml": Case(
        "workload.architectures[0].experts[0]", "E=16 neither divides nor is a multiple of the 12 GPUs"
    ),
    "bad_section_too_narrow.yaml": Case("workload.architectures[0].experts[0]", "sections of width 32 < min_section_width=64"),
    "bad_not_yaml.yaml": Case("", "not valid YAML", lines=(1, 2)),  # the unclosed '[' or the end of the stream
    "bad_top_level_list.yaml": Case("", "expected a mapping of fields at the top level"),
    # A missing field has no line of its own: the line is that of its parent mapping (marked).
    "bad_missing_field.yaml": Case("hardware.gpu.memory_capacity", "Field required"),
    "bad_unknown_architecture.yaml": Case("workload.architectures[2].kind", "Input tag 'sparse_moe' found using 'kind'"),
    "bad_batch_not_divisible.yaml": Case("workload.layer.batch", "batch 10 does not spread evenly over 12 GPUs"),
    # A cross-field check of the entry: names the token_moe entry.
    "bad_top_k.yaml": Case("workload.architectures[1].top_k", "top_k (6) exceeds num_experts (4)"),
    "bad_missing_hardware_include.yaml": Case("hardware", "no hardware file 'missing-hardware.yaml' next to the scenario"),
    # An error inside an included hardware file names that file, its field path and its line.
    "bad_include_invalid_hardware.yaml": Case(
        "gpu.memory_bandwidth", "bandwidth must be positive", file="hardware_zero_bandwidth.yaml"
    ),
    "bad_network_model.yaml": Case("network.model", "Input should be 'flows' or 'ports'"),
    "bad_nic_pcie_on_pcie_node.yaml": Case("hardware.inter_node.gpu_nic_pcie_bandwidth_per_direction", "only for nvswitch nodes"),
}

BAD_FILES = sorted(CASES)
MISSING = DATA / "does-not-exist.yaml"


def marked_line(path: Path) -> int | None:
    """The 1-based line carrying the ``# <- error`` marker, or None."""
    lines = [number for number, text in enumerate(path.read_text().splitlines(), start=1) if MARKER in text]
    assert len(lines) <= 1, f"{path.name}: more than one error marker"
    return lines[0] if lines else None


def assert_one_line(message: str) -> None:
    assert message, "empty error message"
    assert "\n" not in message and "\r" not in message, f"message is not one line: {message!r}"


def load_error(path: Path | str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    return caught.value


def test_every_bad_fixture_has_a_case():
    assert sorted(p.name for p in DATA.glob("bad_*.yaml")) == BAD_FILES


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_fixture_raises_one_line_scenario_error(name: str):
    case, path = CASES[name], DATA / name
    error = load_error(path)
    message = str(error)
    assert_one_line(message)

    named = DATA / (case.file or name)
    assert named.name in message
    assert Path(error.file).name == named.name

    assert error.field == case.field, message
    if case.field:
        assert f": {case.field}: " in message
    assert case.reason in message
    assert case.reason in error.reason

    expected_line = marked_line(named)
    if expected_line is not None and not (case.line_optional and error.line is None):
        assert error.line == expected_line, message
        assert f"{named.name}:{expected_line}: " in message
    elif case.lines is not None:
        assert error.line in case.lines, message


def test_missing_file():
    error = load_error(MISSING)
    message = str(error)
    assert_one_line(message)
    assert MISSING.name in message
    assert "no such file" in message
    assert error.line is None


@pytest.mark.parametrize("name", BAD_FILES + [MISSING.name])
def test_cli_analyze_bad_scenario_exits_2_with_one_line(name: str, capsys):
    path = DATA / name
    code = main(["analyze", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith("secmoe-sim: error: ")
    assert (CASES[name].file if name in CASES and CASES[name].file else name) in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.slow
def test_module_entry_point_exits_2_with_one_line():
    path = DATA / "bad_unknown_unit.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "secmoe_sim", "analyze", str(path)], capture_output=True, check=False, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "bad_unknown_unit.yaml" in result.stderr
    assert "unknown unit 'GB/sec'" in result.stderr
    assert result.stdout == ""


# --- included hardware ----------------------------------------------------------------------


def test_included_hardware_file_loads():
    cluster = load_cluster(DATA / "hardware_ok.yaml")
    assert isinstance(cluster, Cluster)
    assert cluster.name == "included-test-node"
    assert cluster.num_gpus == 12


def test_scenario_including_hardware_loads():
    scenario = load_scenario(DATA / "includes_hardware.yaml")
    assert isinstance(scenario, Scenario)
    assert scenario.hardware.name == "included-test-node"
    assert scenario.hardware == load_cluster(DATA / "hardware_ok.yaml")


def test_an_included_name_is_looked_up_beside_the_scenario_not_in_the_working_directory(tmp_path, monkeypatch):
    """A bare ``hardware:`` name means a file beside the scenario, else a shipped one (the docs' rule): a file of
    that name in the working directory, which a user may run the command from anywhere, is not it."""
    elsewhere, here = tmp_path / "elsewhere", tmp_path / "here"
    elsewhere.mkdir()
    here.mkdir()
    (here / "hardware_ok.yaml").write_text((DATA / "hardware_ok.yaml").read_text())
    scenario = (DATA / "includes_hardware.yaml").read_text()
    (elsewhere / "scenario.yaml").write_text(scenario)
    monkeypatch.chdir(here)
    with pytest.raises(ScenarioError, match="no hardware file 'hardware_ok.yaml' next to the scenario"):
        load_scenario(elsewhere / "scenario.yaml")
    (elsewhere / "hardware_ok.yaml").write_text((DATA / "hardware_ok.yaml").read_text())
    assert load_scenario(elsewhere / "scenario.yaml").hardware.name == "included-test-node"


# --- no hang on absurd sizes -----------------------------------------------------------------


@pytest.mark.slow
def test_huge_d_model_is_rejected_or_loaded_quickly(tmp_path):
    """A d_model of 2**62 (an int YAML reads fine) must not make validation run for minutes.

    Run in a subprocess so that a hang fails this test instead of stalling the suite.
    """
    data = yaml.safe_load(resolve_scenario_path("h100-nvlink-8").read_text())
    data["workload"]["layer"]["d_model"] = 2**62
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    script = textwrap.dedent(
        f"""
        from secmoe_sim.errors import ScenarioError
        from secmoe_sim.spec.loading import load_scenario
        try:
            load_scenario({str(path)!r})
        except ScenarioError as error:
            assert "\\n" not in str(error)
        """
    )
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        result = None
    assert result is not None, "load_scenario with d_model = 2**62 did not finish within 20 s"
    assert result.returncode == 0, result.stderr
