"""Sweep files: grid and zip expansion, unit strings, overrides, point keys, and one-line errors
before anything runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from secmoe_sim.cli import main
from secmoe_sim.sweep.spec import MAX_POINTS, SweepError, load_sweep, point_key, shipped_sweep_names

DATA = Path(__file__).parent / "data"
MARKER = "# <- error"


def write_sweep(folder: Path, body: str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text("schema_version: 1\nname: test\nbase: rtx4090-pcie-8\n" + textwrap.dedent(body), encoding="utf-8")
    return path


def marked_line(path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if MARKER in line)


def test_grid_is_the_cartesian_product_last_axis_fastest(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
        axes:
          - path: workload.layer.seq_len
            values: [512, 1024]
          - path: hardware.intra_node.latency
            values: ["1 us", "2 us", "3 us"]
    """,
        )
    )
    assert [p.point_id for p in sweep.points] == list(range(6))
    assert [(p.values["workload.layer.seq_len"], p.values["hardware.intra_node.latency"]) for p in sweep.points] == [
        (512, 1e-6),
        (512, 2e-6),
        (512, 3e-6),
        (1024, 1e-6),
        (1024, 2e-6),
        (1024, 3e-6),
    ]
    assert sweep.grid == [["workload.layer.seq_len"], ["hardware.intra_node.latency"]]
    assert [p.scenario.workload.layer.seq_len for p in sweep.points] == [512] * 3 + [1024] * 3


def test_zipped_axes_go_together_position_by_position(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
        axes:
          - zip:
              - path: hardware.gpus_per_node
                values: [2, 4, 8]
              - path: workload.layer.batch
                values: [4, 8, 16]
    """,
        )
    )
    assert [(p.scenario.hardware.num_gpus, p.scenario.workload.layer.batch) for p in sweep.points] == [(2, 4), (4, 8), (8, 16)]
    assert sweep.grid == [["hardware.gpus_per_node", "workload.layer.batch"]]


def test_zip_inside_a_grid(tmp_path):
    sweep = load_sweep(DATA / "sweep_small.yaml")
    assert len(sweep.points) == 3 * 2
    first, second = sweep.points[0], sweep.points[1]
    assert first.written == {
        "workload.layer.seq_len": 512,
        "hardware.intra_node.link_bandwidth_per_direction": "12 GB/s",
        "hardware.intra_node.latency": "3 us",
    }
    assert second.values["hardware.intra_node.link_bandwidth_per_direction"] == 24e9
    assert second.values["hardware.intra_node.latency"] == pytest.approx(5.8e-6)
    assert sweep.resolved["hardware.intra_node.link_bandwidth_per_direction"] == [12e9, 24e9]
    assert sweep.resolved["workload.layer.seq_len"] == [512, 1024, 2048]


def test_overrides_apply_to_every_point_and_list_positions_are_paths(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
        overrides:
          workload.architectures.0.experts: [2, 4]
        axes:
          - path: workload.architectures.1.top_k
            values: [1, 2]
    """,
        )
    )
    assert all(p.scenario.workload.architectures[0].experts == [2, 4] for p in sweep.points)
    assert [p.scenario.workload.architectures[1].top_k for p in sweep.points] == [1, 2]
    assert sweep.base.workload.architectures[0].experts == [2, 4]


def test_overrides_are_validated_together(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
        overrides:
          workload.layer.batch: 12      # 12 sequences do not spread over the base's 8 GPUs, but do over 4
          hardware.gpus_per_node: 4
        axes:
          - path: seed
            values: [0]
    """,
        )
    )
    assert (sweep.base.hardware.num_gpus, sweep.base.workload.layer.batch) == (4, 12)


def test_list_and_mapping_values_become_json_cells(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            """
        axes:
          - path: workload.architectures.0.experts
            values: [[1, 2], [4, 8]]
    """,
        )
    )
    assert [p.values["workload.architectures.0.experts"] for p in sweep.points] == ["[1,2]", "[4,8]"]


def test_the_key_is_the_resolved_scenario_and_the_version(tmp_path):
    with_units = load_sweep(
        write_sweep(
            tmp_path,
            """
        axes:
          - path: hardware.intra_node.link_bandwidth_per_direction
            values: ["12 GB/s", "24 GB/s"]
    """,
            "units.yaml",
        )
    )
    in_si = load_sweep(
        write_sweep(
            tmp_path,
            """
        description: the same values in bytes/s, another name, another description
        axes:
          - path: hardware.intra_node.link_bandwidth_per_direction
            values: [12.0e9, 24.0e9]
    """,
            "si.yaml",
        )
    )
    assert [p.key for p in with_units.points] == [p.key for p in in_si.points]
    assert [p.key for p in load_sweep(tmp_path / "units.yaml").points] == [p.key for p in with_units.points]
    assert len({p.key for p in with_units.points}) == 2
    assert all(len(p.key) == 20 and int(p.key, 16) >= 0 for p in with_units.points)
    scenario = with_units.points[0].scenario
    assert point_key(scenario, "0.1.0") != point_key(scenario, "0.2.0")
    assert point_key(scenario) == with_units.points[0].key


def test_an_edited_axis_changes_only_the_keys_of_the_points_it_changes(tmp_path):
    before = load_sweep(
        write_sweep(
            tmp_path,
            """
        axes:
          - path: workload.layer.seq_len
            values: [512, 1024]
    """,
        )
    )
    after = load_sweep(
        write_sweep(
            tmp_path,
            """
        axes:
          - path: workload.layer.seq_len
            values: [512, 2048]
    """,
        )
    )
    assert before.points[0].key == after.points[0].key
    assert before.points[1].key != after.points[1].key
    assert before.content_hash() != after.content_hash()


def test_base_is_relative_to_the_sweep_file(tmp_path):
    base = (Path(__file__).parent.parent / "secmoe_sim" / "scenarios" / "rtx4090-pcie-8.yaml").read_text()
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "mine.yaml").write_text(base.replace("name: rtx4090-pcie-8", "name: mine"))
    path = tmp_path / "sweeps" / "s.yaml"
    path.parent.mkdir()
    path.write_text("schema_version: 1\nname: s\nbase: ../scenarios/mine.yaml\naxes:\n  - path: seed\n    values: [0, 1]\n")
    sweep = load_sweep(path)
    assert sweep.base.name == "mine" and [p.scenario.seed for p in sweep.points] == [0, 1]


def test_shipped_sweeps_load_by_name():
    assert {"h100-nvlink-bandwidth-x-seq-len", "h200-nodes-x-ib-bandwidth"} <= set(shipped_sweep_names())
    for name in shipped_sweep_names():
        sweep = load_sweep(name)
        assert sweep.points and sweep.spec.name == name


BAD_SWEEPS = {
    "unknown field": (
        """
        axes:
          - path: workload.layer.seqlen   # <- error
            values: [512]
    """,
        "axes[0] (workload.layer.seqlen): unknown field 'seqlen' in workload.layer (its fields: d_model, seq_len",
    ),
    "position past the end": (
        """
        axes:
          - path: workload.architectures.7.top_k   # <- error
            values: [1]
    """,
        "position 7 is past the end of workload.architectures (4 entries)",
    ),
    "a value has no fields": (
        """
        axes:
          - path: workload.layer.seq_len.tokens   # <- error
            values: [1]
    """,
        "workload.layer.seq_len is a single value (2048), it has no field 'tokens'",
    ),
    "unset section": (
        """
        axes:
          - path: hardware.inter_node.latency   # <- error
            values: ["1 us"]
    """,
        "hardware.inter_node is not set in the base scenario",
    ),
    "wrong dimension": (
        """
        axes:
          - path: hardware.intra_node.latency
            values: ["5 us", "3 GB"]   # <- error
    """,
        "axes[0] (hardware.intra_node.latency): value '3 GB': '3 GB' is a size, expected a duration",
    ),
    "not a number": (
        """
        axes:
          - path: workload.layer.seq_len
            values: [512, many]   # <- error
    """,
        "value 'many': Input should be a valid integer",
    ),
    "cross-field": (
        """
        axes:
          - path: hardware.gpus_per_node
            values: [8, 3]
    """,
        "the point (hardware.gpus_per_node=3) is not a valid scenario: workload.layer.batch: batch 16 does not spread evenly over 3 GPUs",
    ),
    "zip lengths": (
        """
        axes:
          - zip:
              - path: workload.layer.seq_len
                values: [512, 1024]
              - path: hardware.intra_node.latency
                values: ["1 us"]   # <- error
    """,
        "zipped axes need equal numbers of values: workload.layer.seq_len has 2, hardware.intra_node.latency has 1",
    ),
    "axis swept twice": (
        """
        axes:
          - path: hardware.intra_node
            values: [{}]
          - path: hardware.intra_node.latency   # <- error
            values: ["1 us"]
    """,
        "hardware.intra_node.latency overlaps the axis hardware.intra_node",
    ),
    "override under an axis": (
        """
        overrides:
          hardware.intra_node.latency: 1 us
        axes:
          - path: hardware.intra_node   # <- error
            values: [{}]
    """,
        "the override hardware.intra_node.latency lies inside this axis",
    ),
    "bad override": (
        """
        overrides:
          workload.layer.batch: 12   # <- error
        axes:
          - path: seed
            values: [0]
    """,
        "overrides.workload.layer.batch: workload.layer.batch: batch 12 does not spread evenly over 8 GPUs",
    ),
    "both forms": (
        """
        axes:
          - path: seed   # <- error
            values: [0]
            zip: [{path: seed, values: [1]}]
    """,
        "give either 'path' and 'values' (one axis) or 'zip'",
    ),
    "no axes": (
        """
        axes: []   # <- error
    """,
        "axes: List should have at least 1 item",
    ),
    "missing base": (
        """
        axes:
          - path: seed
            values: [0]
    """,
        "base: 'no-such-scenario': no such file, and no shipped scenario of that name",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_a_bad_sweep_fails_with_one_line_naming_file_axis_and_reason(tmp_path, case):
    body, expected = BAD_SWEEPS[case]
    path = write_sweep(tmp_path, body)
    if case == "missing base":
        path.write_text(path.read_text().replace("base: rtx4090-pcie-8", "base: no-such-scenario"))
    with pytest.raises(SweepError) as error:
        load_sweep(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(str(path)) and expected in message, message
    if MARKER in path.read_text():
        assert error.value.line == marked_line(path), message


def test_too_many_points_are_refused_before_expansion(tmp_path):
    values = list(range(1, 1001))
    path = write_sweep(
        tmp_path,
        f"""
        axes:
          - path: seed
            values: {values}
          - path: workload.layer.seq_len
            values: {values}
          - path: workload.layer.batch
            values: [8, 16]
    """,
    )
    with pytest.raises(SweepError, match=f"more than the {MAX_POINTS:,}"):
        load_sweep(path)


@pytest.mark.parametrize(
    "fixture, fragment",
    [
        (
            "sweep_bad_axis_path.yaml",
            "axes[1] (hardware.intra_node.bandwith_per_direction): unknown field 'bandwith_per_direction'",
        ),
        (
            "sweep_bad_axis_value.yaml",
            (
                "axes[0] (hardware.intra_node.link_bandwidth_per_direction): value '1.5 us': "
                "'1.5 us' is a duration, expected a bandwidth"
            ),
        ),
    ],
)
@pytest.mark.slow
def test_the_cli_fails_before_any_point_runs(tmp_path, fixture, fragment):
    path, out = DATA / fixture, tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "secmoe_sim", "sweep", str(path), "--out", str(out)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr
    assert lines[0].startswith(f"secmoe-sim: error: {path}:{marked_line(path)}: ") and fragment in lines[0]
    assert not out.exists()  # nothing ran, nothing was written
    assert completed.stdout == ""


def test_missing_sweep_file_is_one_line(capsys):
    assert main(["sweep", "no-such-sweep"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no such file, and no shipped sweep of that name" in error
