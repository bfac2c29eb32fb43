"""One regression test per cause of a traceback, hang, wrong accept or silently wrong number found by
mutation fuzzing (each named after its cause): bad input is one line and exit code 2, a bug is one
line and exit code 1, and nothing absurd is ever written as a result."""

from __future__ import annotations

import copy
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import hand_plan, make_cluster

from secmoe_sim.cli import commands, main
from secmoe_sim.engine import run_plan
from secmoe_sim.errors import SimulationError
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.routing import top_k_counts
from secmoe_sim.spec.loading import resolve_scenario_path
from secmoe_sim.sweep import store as store_module
from secmoe_sim.sweep.store import SweepStore

H100 = yaml.safe_load(resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8"))
TINY = Path(__file__).parent / "data" / "tiny_validation.yaml"


def mutated(tmp_path: Path, *changes: tuple[tuple, object], base: dict = H100) -> Path:
    data = copy.deepcopy(base)
    for path, value in changes:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    target = tmp_path / "case.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def one_line_error(argv: list[str], capsys, *fragments: str, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


LAYER = ("workload", "layer")
GPU = ("hardware", "gpu")


# --- tracebacks --------------------------------------------------------------------------------


def test_deeply_nested_yaml(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    one_line_error(["analyze", str(path)], capsys, "deep.yaml", "nested deeper than")


def test_integer_beyond_float_range_in_a_quantity(tmp_path, capsys):
    path = mutated(tmp_path, (GPU + ("memory_bandwidth",), 2**1100))
    one_line_error(["analyze", str(path)], capsys, "hardware.gpu.memory_bandwidth", "beyond any finite bandwidth")


def test_huge_token_moe_routing_is_refused_by_the_work_budget(tmp_path, capsys):
    path = mutated(tmp_path, (("workload", "architectures", 3, "num_experts"), 65536))
    one_line_error(["run", str(path), "--out", str(tmp_path / "out")], capsys, "routing draws", "--allow-large")


def test_routing_draws_at_most_a_bounded_matrix_at_once():
    """65,536 experts: each draw is at most 2^22 keys (32 MiB), not 16,384 x 65,536 (8 GiB)."""
    counts = top_k_counts(100, np.ones(65536), 2, np.random.default_rng(0))
    assert counts.sum() == 200


def test_negative_seed(capsys):
    one_line_error(["run", "h100-nvlink-8", "--seed", "-1"], capsys, "--seed", "between 0 and")


def test_infinite_result_fed_to_the_root_finder(tmp_path, capsys):
    """ffn_multiplier 1e300 made every time infinite and numpy's root finder raise; refused at load now."""
    path = mutated(tmp_path, (LAYER + ("ffn_multiplier",), 1e300))
    one_line_error(["analyze", str(path)], capsys, "workload.layer.ffn_multiplier", "less than or equal to 64")


def test_compute_dtype_without_peak_flops(tmp_path, capsys):
    path = mutated(tmp_path, (LAYER + ("dtype",), "fp32"))
    one_line_error(["analyze", str(path)], capsys, "workload.layer.dtype", "no peak_flops entry for 'fp32'")


@pytest.mark.parametrize("command", ["run", "sweep", "plot"])
@pytest.mark.parametrize("kind", ["a file", "under /dev/null", "not creatable"])
def test_output_directory_that_cannot_be_used(command, kind, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = {"a file": blocker, "under /dev/null": Path("/dev/null/out"), "not creatable": blocker / "sub"}[kind]
    target = {"run": ["run", str(TINY)], "sweep": ["sweep", "h100-nvlink-bandwidth-x-seq-len"], "plot": ["plot", str(tmp_path)]}
    one_line_error([*target[command], "--out", str(out)], capsys, "--out")


def test_scheduler_that_is_not_an_address(capsys):
    one_line_error(
        ["sweep", "h100-nvlink-bandwidth-x-seq-len", "--scheduler", "not an address"], capsys, "not a scheduler address"
    )


def test_sweep_value_beyond_a_c_long(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "schema_version: 1\nname: big\nbase: h100-nvlink-8\naxes:\n  - path: seed\n    values: [1, 100000000000000000000000000]\n"
    )
    one_line_error(["sweep", str(path), "--out", str(tmp_path / "out")], capsys, "sweep.yaml", "less than or equal to")


# --- hangs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        (LAYER + ("d_model",), 2**19),
        (LAYER + ("seq_len",), 2**20),
        (LAYER + ("batch",), 2**20),
        (("workload", "architectures", 0, "min_section_width"), 1),
    ],
    ids=["d_model", "seq_len", "batch", "min_section_width"],
)
def test_analyze_of_a_huge_layer_answers_at_once(change, tmp_path, capsys):
    path = mutated(tmp_path, change)
    assert main(["analyze", str(path)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


def test_run_of_a_huge_batch_is_refused_before_it_starts(tmp_path, capsys):
    path = mutated(tmp_path, (LAYER + ("batch",), 2**20))
    one_line_error(["run", str(path), "--out", str(tmp_path / "out")], capsys, "--allow-large")


# --- wrong accepts ----------------------------------------------------------------------------


def test_booleans_taken_as_numbers(tmp_path, capsys):
    path = mutated(tmp_path, (LAYER + ("d_model",), True))
    one_line_error(["analyze", str(path)], capsys, "workload.layer.d_model", "a boolean where a number")


def test_duplicate_keys_in_a_mapping(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(resolve_scenario_path("h100-nvlink-8").read_text().replace("seed: 0\n", "seed: 0\nseed: 1\n"))
    one_line_error(["analyze", str(path)], capsys, "duplicate key 'seed'")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ((GPU + ("peak_flops", "bf16"), 1e-300), "hardware.gpu.peak_flops.bf16"),
        ((GPU + ("memory_bandwidth",), "1e-300 B/s"), "hardware.gpu.memory_bandwidth"),
        ((GPU + ("kernel_launch_overhead",), "1e308 s"), "hardware.gpu.kernel_launch_overhead"),
    ],
    ids=["tiny_peak_flops", "tiny_memory_bandwidth", "huge_duration"],
)
def test_absurd_quantities_that_printed_inf(change, field, tmp_path, capsys):
    one_line_error(["analyze", str(mutated(tmp_path, change))], capsys, field, "outside the physical range")


def test_sequence_reduction_larger_than_seq_len(tmp_path, capsys):
    path = mutated(tmp_path, (("workload", "architectures", 0, "pre_expert", "sequence_reduction"), 8192))
    one_line_error(["analyze", str(path)], capsys, "sequence_reduction", "does not divide seq_len")


@pytest.mark.parametrize("alpha", ["-1 us", "1e300 s", "20"])
def test_analyze_alpha_that_is_not_a_duration_to_use(alpha, capsys):
    one_line_error(["analyze", "h100-nvlink-8", "--alpha", alpha], capsys, "--alpha")


def test_measured_routing_counts_that_overflow(tmp_path, capsys):
    routing = {"kind": "counts", "counts": [1e308] * 8}
    path = mutated(tmp_path, (("workload", "architectures", 3, "routing"), routing))
    one_line_error(["analyze", str(path)], capsys, "routing.counts[0]", "a token count must be")


def test_options_are_never_guessed_from_a_prefix(capsys):
    one_line_error(["run", "h100-nvlink-8", "--se", "3"], capsys, "unrecognized arguments: --se")


def test_yaml_aliases_are_refused(tmp_path, capsys):
    path = tmp_path / "alias.yaml"
    path.write_text("a: &x [1, 2]\nb: *x\n")
    one_line_error(["analyze", str(path)], capsys, "aliases (*x) are not supported")


def test_names_are_printable(tmp_path, capsys):
    path = mutated(tmp_path, (("workload", "architectures", 0, "label"), "a\x1fb"))
    one_line_error(["analyze", str(path)], capsys, "printable")


# --- silently wrong numbers -------------------------------------------------------------------


class InfiniteTimer:
    def kernel_time_s(self, kernel):
        return float("inf")

    def launch_time_s(self, kernel):
        return 0.0


def test_an_op_of_infinite_duration_stops_the_engine_loudly():
    """It used to end the event loop with every GPU at t = 0 and print 0 ns wall-clocks."""
    plan = hand_plan(make_cluster(gpus_per_node=1), [[Kernel("k", "pre", 1.0, 1.0)]])
    with pytest.raises(SimulationError, match="duration of inf"):
        run_plan(plan, timer=InfiniteTimer())


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "cmd_analyze", broken)  # main looks the handler up when the command runs
    err = one_line_error(["analyze", "h100-nvlink-8"], capsys, "internal error: RuntimeError: boom", "--debug", code=1)
    assert "Traceback" not in err
    assert main(["--debug", "analyze", "h100-nvlink-8"]) == 1
    assert "Traceback" in capsys.readouterr().err


# --- sweep directories ------------------------------------------------------------------------


def test_truncated_point_file_is_computed_again(tmp_path):
    store = SweepStore(tmp_path)
    store.points_dir.mkdir(parents=True)
    pd.DataFrame({"a": [1.0]}).to_parquet(store.points_dir / "kept.parquet")
    (store.points_dir / "truncated.parquet").write_bytes(b"PAR1 truncated")
    assert store.completed_keys() == {"kept"}  # the unreadable one is not done, and is removed to be computed again
    assert not (store.points_dir / "truncated.parquet").exists()


def test_plot_on_a_truncated_results_file(tmp_path, capsys):
    (tmp_path / "results.parquet").write_bytes(b"PAR1 truncated")
    (tmp_path / "metadata.json").write_text("{}")
    one_line_error(["plot", str(tmp_path)], capsys, "cannot read the results")


def test_unwritable_points_folder_is_one_line_with_the_resume_hint(tmp_path, capsys, monkeypatch):
    def no_space(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", no_space)
    sweep = tmp_path / "small.yaml"
    sweep.write_text(
        textwrap.dedent(
            f"""
            schema_version: 1
            name: small
            base: {TINY}
            axes:
              - path: seed
                values: [1]
            """
        )
    )
    one_line_error(
        ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--quiet", "--workers", "1"], capsys, "No space left", "resume"
    )
    assert os.path.isdir(tmp_path / "out")
