"""Fitted hardware as a YAML file that says where each number came from, and the ``--base`` input.

The file has the Cluster schema (``load_cluster`` reads it; a scenario includes it with
``hardware: path/to/hardware.yaml``). A header names the trace (path, SHA-256, when and where it
was measured), the tool and date of the fit, and the fit error per op class; a comment above each
fitted field says how it was obtained. Numbers are in SI base units (seconds, bytes, bytes/s,
FLOP/s).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml

from secmoe_sim.calibrate.fit import FitResult
from secmoe_sim.calibrate.trace import Trace, file_sha256
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.loading import load_cluster, load_scenario_or_cluster
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.version import __version__

INDENT = "  "


def load_base(path_or_name: str) -> Cluster:
    """The cluster of a scenario or of a stand-alone hardware file, by path or shipped name."""
    found = load_scenario_or_cluster(path_or_name)
    return found.hardware if isinstance(found, Scenario) else found


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text  # YAML 1.1 floats need a dot
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def _flow(value: dict | list) -> str:
    """A nested value on one line, in YAML flow style."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=2**31).strip()


def _emit(node: dict, comments: dict[str, str], prefix: str = "", depth: int = 0) -> list[str]:
    lines = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        indent = INDENT * depth
        if path in comments:
            lines.append(f"{indent}# {comments[path]}")
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += _emit(value, comments, f"{path}.", depth + 1)
        elif isinstance(value, list) and all(isinstance(item, dict) for item in value):
            lines.append(f"{indent}{key}:")
            for item in value:
                lines.append(f"{indent}{INDENT}- {_flow(item)}")
        elif isinstance(value, dict | list):
            lines.append(f"{indent}{key}: {_flow(value)}")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return lines


def hardware_yaml(result: FitResult, trace: Trace, trace_path: Path) -> str:
    """The YAML text of the fitted cluster with its provenance."""
    meta = trace.metadata
    measured = (
        f"{meta.get('created_at', 'unknown date')} on {meta.get('device_name', 'unknown')} ({meta.get('device', '?')}), "
        f"torch {meta.get('torch_version', 'unknown')}, {meta.get('threads', '?')} threads, source {meta.get('source', '?')}"
        f"{', grid ' + meta['grid'] if 'grid' in meta else ''}"
    )
    header = [
        (
            f"Hardware fitted by `secmoe-sim fit` (secmoe-sim {__version__}) on "
            f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
        ),
        f"  trace: {trace_path} (sha256 {file_sha256(trace_path)})",
        f"  measured: {measured}",
        "Numbers are SI base units: seconds, bytes, bytes/s, FLOP/s. Dtypes the trace did not measure have no peak.",
        "Fit error per op class, predicted / measured - 1 through the simulator's own op timing:",
    ]
    for row in result.errors.to_dict("records"):
        fitted = (
            f"fitted MAPE {row['mape_fitted_pct']:.1f}% ({row['fitted_shapes']} shapes)"
            if row["fitted_shapes"]
            else "not fitted (a check)"
        )
        held = (
            f"held-out MAPE {row['mape_heldout_pct']:.1f}% (worst {row['worst_heldout_pct']:+.1f}%, "
            f"{row['heldout_shapes']} shapes)"
            if row["heldout_shapes"]
            else "no held-out shapes"
        )
        header.append(f"  {row['op_class']:<18} {fitted}; {held}")
    for link in result.links:
        header.append(f"  link {link.path} {link.op}: alpha {link.alpha_s:.4g} s, beta {link.beta_bytes_per_s:.4g} B/s")
    document = result.cluster.model_dump(mode="json", exclude_none=True)
    body = _emit(document, result.sources)
    return "\n".join(f"# {line}" for line in header) + "\n" + "\n".join(body) + "\n"


def write_hardware(result: FitResult, trace: Trace, trace_path: Path, out_path: Path) -> list[Path]:
    """Write the hardware file and, beside it, its error table (``<name>.fit_errors.csv``)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(hardware_yaml(result, trace, trace_path), encoding="utf-8")
    errors_path = out_path.with_suffix(".fit_errors.csv")
    result.errors.to_csv(errors_path, index=False)
    load_cluster(out_path)  # the file must read back as the schema says
    return [out_path, errors_path]
