"""The calibration commands without torch, the fit command, and the core importing without torch."""

import subprocess
import sys

import pytest
from calibration_fixtures import synthetic_trace

from secmoe_sim.calibrate import INSTALL_HINT
from secmoe_sim.calibrate.trace import write_trace
from secmoe_sim.cli import main
from secmoe_sim.spec.loading import load_cluster


@pytest.mark.parametrize("command", [["calibrate", "--quick"], ["check-real", "--quick"]])
def test_commands_needing_torch_fail_cleanly_without_it(monkeypatch, tmp_path, capsys, command):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert main(command + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and INSTALL_HINT in err[0]


def test_fit_needs_no_torch(monkeypatch, tmp_path, capsys):
    trace = write_trace(synthetic_trace(), tmp_path / "trace.csv")
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["fit", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "gemm" in out and "hardware.yaml" in out
    cluster = load_cluster(tmp_path / "hardware.yaml")
    assert cluster.gpu.gemm_shape_efficiency and cluster.gpu.attention_shape_efficiency
    assert (tmp_path / "hardware.fit_errors.csv").is_file()


def test_fit_with_base_and_custom_out(tmp_path):
    trace = write_trace(synthetic_trace(), tmp_path / "trace.parquet")
    assert main(["fit", str(trace), "--base", "a100-pcie-8", "--out", str(tmp_path / "hw" / "a100-fit.yaml")]) == 0
    cluster = load_cluster(tmp_path / "hw" / "a100-fit.yaml")
    assert cluster.gpus_per_node == 8 and cluster.intra_node.kind == "pcie"


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "missing.csv"],
        ["fit", "{trace}", "--base", "no-such-scenario"],
        ["check-real", "--repeats", "5"],
        ["calibrate", "--device", "tpu"],
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv):
    trace = write_trace(synthetic_trace(), tmp_path / "trace.csv")
    argv = [a.replace("{trace}", str(trace)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse rejects bad option values itself
        code = exit_info.code
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.slow
def test_core_and_calibration_modules_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import secmoe_sim, secmoe_sim.cli.parser as cli\n"
        "from secmoe_sim.calibrate import (check_real, comm_bench, fit, fit_errors, fitting, hardware_file, link_fit,\n"
        "    microbench, profile_import, reference_layer, replay, shape_fit, table_import, timing, trace)\n"
        "cli.build_parser().parse_args(['calibrate', '--quick'])\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
