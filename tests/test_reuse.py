"""Reusable inputs: shipped hardware by name, scenarios that extend others, one-off ``--set`` changes,
``list`` and ``show``, the hardware schema and figure formats."""

from __future__ import annotations

import hashlib
import json

import jsonschema
import pytest
import yaml

from secmoe_sim.cli import main
from secmoe_sim.errors import ScenarioError
from secmoe_sim.spec.loading import (
    load_cluster,
    load_scenario,
    resolve_scenario_path,
    shipped_hardware_names,
)
from secmoe_sim.spec.units import SECOND_FACTORS

EXPECTED_HARDWARE = {"h100-hgx", "h200-hgx", "a100-sxm4-hgx", "a100-pcie", "rtx4090-pcie", "mi300x", "gb200-nvl72"}


def printed_schema(capsys, *options: str) -> dict:
    assert main(["schema", *options]) == 0
    return json.loads(capsys.readouterr().out)


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_the_documented_hardware_is_shipped():
    assert EXPECTED_HARDWARE <= set(shipped_hardware_names())


@pytest.mark.parametrize("name", shipped_hardware_names())
def test_every_shipped_hardware_file_loads_by_name_and_validates_against_the_printed_schema(name, capsys):
    cluster = load_cluster(name)
    assert cluster.num_gpus >= 8 and cluster.communication is not None  # every shipped hardware file names its stack
    from secmoe_sim.spec.loading import file_or_shipped

    path = file_or_shipped(name, "hardware")
    assert path is not None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, printed_schema(capsys, "--hardware"))
    text = path.read_text(encoding="utf-8")
    for field in ("peak_flops", "memory_capacity", "compute_efficiency"):  # every number carries its source
        line = next(line for line in text.splitlines() if line.strip().startswith(field))
        index = text.splitlines().index(line)
        above = text.splitlines()[index - 2 : index + 2]
        assert any("#" in nearby for nearby in above), f"{name}: {field} has no source comment"


def test_the_shipped_hardware_matches_the_scenario_it_was_taken_from():
    """h100-hgx is the cluster of h100-nvlink-8 (which keeps its hardware inline), name aside."""
    scenario = load_scenario("h100-nvlink-8")
    cluster = load_cluster("h100-hgx")
    assert cluster.gpu == scenario.hardware.gpu and cluster.intra_node == scenario.hardware.intra_node
    assert cluster.stack_settings() == scenario.stacks


def test_a_scenario_names_shipped_hardware(tmp_path):
    base = yaml.safe_load(resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8"))
    data = {key: value for key, value in base.items() if key not in ("hardware", "communication")}
    path = write(tmp_path / "s.yaml", yaml.safe_dump({**data, "hardware": "mi300x"}))
    scenario = load_scenario(path)
    assert scenario.hardware.gpu.name == "MI300X" and scenario.hardware.intra_node.kind == "full_mesh"
    assert scenario.stacks.default.efficiency["full_mesh"][0].efficiency == 0.75  # the hardware file's own stack


def test_a_file_beside_the_scenario_wins_over_a_shipped_name(tmp_path):
    """``hardware: h100-hgx`` is the user's own file when one of that name lies beside the scenario."""
    own = yaml.safe_load((resolve_scenario_path("h100-nvlink-8").parent.parent / "hardware" / "h100-hgx.yaml").read_text())
    own["gpu"]["memory_capacity"] = "40 GB"
    write(tmp_path / "h100-hgx", yaml.safe_dump(own))
    base = yaml.safe_load(resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8"))
    data = {key: value for key, value in base.items() if key not in ("hardware", "communication")}
    scenario = load_scenario(write(tmp_path / "s.yaml", yaml.safe_dump({**data, "hardware": "h100-hgx"})))
    assert scenario.hardware.gpu.memory_capacity == 40e9


def test_unknown_hardware_name_lists_the_shipped_ones(tmp_path):
    path = write(tmp_path / "s.yaml", "extends: h100-nvlink-8\nhardware: h900-hgx\n")
    with pytest.raises(ScenarioError, match="no shipped hardware of that name.*h100-hgx") as error:
        load_scenario(path)
    assert "hardware" in str(error.value) and ":2:" in str(error.value)


def test_extends_applies_overrides_to_the_base(tmp_path):
    path = write(tmp_path / "long.yaml", "name: long\nextends: h100-nvlink-8\noverrides:\n  workload.layer.seq_len: 8192\n")
    scenario = load_scenario(path)
    base = load_scenario("h100-nvlink-8")
    assert scenario.name == "long" and scenario.workload.layer.seq_len == 8192
    assert scenario.hardware == base.hardware and scenario.workload.architectures == base.workload.architectures
    expected = base.model_dump()  # the base with only what the file changes, patched by hand
    expected["name"] = "long"
    expected["workload"]["layer"]["seq_len"] = 8192
    assert type(scenario) is type(base) and scenario.model_dump() == expected


def test_extends_a_file_beside_it_that_extends_a_shipped_one(tmp_path):
    write(tmp_path / "base.yaml", "name: base\nextends: h100-nvlink-8\noverrides:\n  workload.layer.batch: 32\n")
    path = write(tmp_path / "child.yaml", "name: child\nextends: base.yaml\noverrides:\n  seed: 3\n")
    scenario = load_scenario(path)
    assert (scenario.name, scenario.workload.layer.batch, scenario.seed) == ("child", 32, 3)


def test_a_section_given_beside_extends_replaces_the_base_section(tmp_path):
    """A new cluster named in full brings its own stack: the base's, chosen for the base's cluster, is dropped."""
    path = write(tmp_path / "mi.yaml", "name: mi\nextends: h100-nvlink-8\nhardware: mi300x\n")
    scenario = load_scenario(path)
    assert scenario.hardware.gpu.name == "MI300X" and scenario.communication is None
    assert scenario.workload == load_scenario("h100-nvlink-8").workload


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("extends: loop.yaml\n", "extends", "a loop"),
        ("extends: nowhere\n", "extends", "no shipped scenario of that name"),
        (
            "extends: h100-nvlink-8\noverrides:\n  workload.layer.seq_lenn: 1\n",
            "overrides.workload.layer.seq_lenn",
            "unknown field",
        ),
        ("extends: h100-nvlink-8\noverrides:\n  workload.layer.seq_len: -1\n", "workload.layer.seq_len", "greater than"),
        ("extends: h100-nvlink-8\noverrides: [1]\n", "overrides", "mapping"),
        ("extends: h100-nvlink-8\nworkload: {layer: {}}\n", "workload.layer.d_model", "Field required"),
    ],
)
def test_bad_extends_is_one_line_naming_the_field(tmp_path, text, field, reason):
    path = write(tmp_path / "loop.yaml", text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert "\n" not in message and f"{field}:" in message and reason in message


def test_extends_overrides_follow_the_sweep_rule(tmp_path):
    """A deeper override refines a shallower one (in either order in the file), as in a sweep's overrides;
    an invalid value is reported at its override, with its line."""
    text = "name: deep\nextends: h100-nvlink-8\noverrides:\n  model.layers: 8\n  model: {layers: 4, vocab_size: 0}\n"
    model = load_scenario(write(tmp_path / "deep.yaml", text)).model
    assert model is not None and (model.layers, model.vocab_size) == (8, 0)
    bad = write(tmp_path / "bad.yaml", "name: bad\nextends: h100-nvlink-8\noverrides:\n  seed: 1\n  workload.layer.batch: 0\n")
    with pytest.raises(ScenarioError) as error:
        load_scenario(bad)
    assert (error.value.field, error.value.line) == ("overrides.workload.layer.batch", 5)


def test_a_too_long_extends_chain_is_named_as_such(tmp_path):
    write(tmp_path / "s9.yaml", "name: s9\nextends: h100-nvlink-8\n")
    for index in range(9):
        write(tmp_path / f"s{index}.yaml", f"name: s{index}\nextends: s{index + 1}.yaml\n")
    with pytest.raises(ScenarioError, match="more than 8 scenarios extend one another") as error:
        load_scenario(tmp_path / "s0.yaml")
    assert "loop" not in str(error.value)


def test_overrides_without_extends_are_refused(tmp_path):
    base = resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8")
    with pytest.raises(ScenarioError, match="only a scenario that extends another has overrides"):
        load_scenario(write(tmp_path / "s.yaml", base + "overrides:\n  seed: 1\n"))


def test_extending_files_validate_against_the_printed_schema(tmp_path, capsys):
    schema = printed_schema(capsys)
    jsonschema.validate({"extends": "h100-nvlink-8", "overrides": {"workload.layer.seq_len": 8192}}, schema)
    jsonschema.validate({"name": "mi", "extends": "h100-nvlink-8", "hardware": "mi300x"}, schema)
    with pytest.raises(jsonschema.ValidationError):  # without extends, the sections are required
        jsonschema.validate({"name": "x", "hardware": "mi300x"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"extends": "h100-nvlink-8", "overrides": {"not a path": 1}}, schema)


def test_run_set_changes_the_scenario_and_is_recorded(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "rtx4090-pcie-8", "--set", "workload.layer.seq_len=1024", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "N=1024" in printed
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["set"] == {"workload.layer.seq_len": 1024}
    data = load_scenario("rtx4090-pcie-8").model_dump(mode="json")  # the shipped scenario, seq_len patched by hand
    data["workload"]["layer"]["seq_len"] = 1024
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))  # the hash's documented canonical form
    assert metadata["scenario_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


def analyzed(capsys, *options: str) -> dict:
    assert main(["analyze", "h100-nvlink-8", *options, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_set_takes_units_and_lists(capsys):
    """The hardware alpha's empty message crosses one NVSwitch stage (GPUs 0 and 1 share a node), so its
    latency term is the intra-node latency: both it and 5 us lie above the stack's latency floor, and
    the message grows by exactly the difference (analytical.empty_exchange_s, communication.one_message_s)."""
    base_latency_s = load_scenario("h100-nvlink-8").hardware.intra_node.latency
    set_latency_s = 5 * SECOND_FACTORS["us"]
    assert 0 < base_latency_s < set_latency_s
    base = analyzed(capsys)
    slower = analyzed(capsys, "--set", "hardware.intra_node.latency=5 us")
    grown_s = slower["alpha_hardware_message_s"] - base["alpha_hardware_message_s"]
    assert grown_s == pytest.approx(set_latency_s - base_latency_s, rel=1e-9)
    # the layer's alpha pays that growth once per collective of the layer (a count the --set does not move)
    assert slower["collectives_per_layer"] == base["collectives_per_layer"] > 0
    alpha_grown_s = slower["alpha_s"] - base["alpha_s"]
    assert alpha_grown_s == pytest.approx(base["collectives_per_layer"] * (set_latency_s - base_latency_s), rel=1e-9)
    listed = analyzed(capsys, "--set", "workload.architectures.0.experts=[4, 8]")
    assert [row["E"] for row in listed["entries"][0]["rows"]] == [4, 8]
    assert listed["entries"][1:] == base["entries"][1:]  # the other entries are untouched


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("workload.layer.seq_lenn=1", "unknown field 'seq_lenn'"),
        ("workload.layer.seq_len=-1", "workload.layer.seq_len"),
        ("workload.layer.seq_len", "expected PATH=VALUE"),
        ("workload.layer.seq_len=[1", "not valid YAML"),
    ],
)
def test_bad_set_is_one_line_exit_2(option, expected, capsys):
    assert main(["analyze", "h100-nvlink-8", "--set", option]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_list_shows_every_kind_with_its_folder(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading in ("scenario files (in", "hardware files (in", "sweep files (in", "stack files (in"):
        assert heading in out
    for name in (*EXPECTED_HARDWARE, "h100-nvlink-8", "h200-nodes-x-ib-bandwidth", "nccl-fidelity"):
        assert name in out


def test_show_prints_the_shipped_file(capsys):
    assert main(["show", "h100-hgx"]) == 0
    shown = capsys.readouterr().out
    assert shown == (resolve_scenario_path("h100-nvlink-8").parent.parent / "hardware" / "h100-hgx.yaml").read_text()
    assert main(["show", "h100-nvlink-8", "--kind", "scenario"]) == 0
    assert "schema_version: 1" in capsys.readouterr().out
    assert main(["show", "no-such-file"]) == 2
    assert "see `secmoe-sim list`" in capsys.readouterr().err


def test_run_writes_the_figure_in_the_asked_format(tmp_path, capsys):
    assert main(["run", "rtx4090-pcie-8", "--format", "svg", "--out", str(tmp_path)]) == 0
    figure = tmp_path / "wall_clock_vs_experts.svg"
    assert figure.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert not (tmp_path / "wall_clock_vs_experts.png").exists()


def test_a_misspelt_field_is_named_with_the_likely_intended_one(tmp_path):
    """The misspelling also leaves the right name missing; the message names the misspelling, not 'Field required'."""
    text = resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8").replace("seq_len:", "seq_lenn:")
    with pytest.raises(ScenarioError) as error:
        load_scenario(write(tmp_path / "s.yaml", text))
    message = str(error.value)
    assert "workload.layer.seq_lenn: unknown field 'seq_lenn' (did you mean 'seq_len'?)" in message
    line = int(message.split(":")[1])
    assert "seq_lenn" in text.splitlines()[line - 1]


def test_the_readme_extends_example_loads(tmp_path):
    readme = (resolve_scenario_path("h100-nvlink-8").parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in readme.split("```yaml\n")[1:] if "extends:" in b.split("```")[0]).split("```")[0]
    scenario = load_scenario(write(tmp_path / "example.yaml", block))
    assert scenario.hardware.num_gpus == 16 and scenario.hardware.gpu.name == "MI300X"
    assert scenario.workload.layer.seq_len == 8192


def test_the_parser_and_the_commands_agree_on_the_shipped_kinds():
    from secmoe_sim.cli import commands, parser

    assert tuple(commands.SHIPPED_KINDS) == parser.SHIPPED_KINDS


def test_the_parser_dtypes_are_the_model_dtypes():
    from typing import get_args

    from secmoe_sim.cli import parser
    from secmoe_sim.spec.hardware import Dtype

    assert parser.DTYPES == get_args(Dtype)


def test_the_parser_figure_formats_are_the_writers():
    from secmoe_sim.cli import parser
    from secmoe_sim.report.outputs import FIGURE_FORMATS

    assert parser.FIGURE_FORMATS == FIGURE_FORMATS
