"""The files of ``fidelity``: the table of published against simulated figures, and what produced it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from secmoe_sim.analysis.fidelity import FIDELITY_TARGET, LINE_RATES_BYTES_PER_S, Efficiency
from secmoe_sim.version import __version__


def write_fidelity(table: pd.DataFrame, efficiency: Efficiency, out_dir: Path) -> list[Path]:
    """``fidelity.csv``, a Markdown copy and ``metadata.json`` (factors, tool version, date)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "fidelity.csv", index=False)
    shown = table.assign(rel_error=table["rel_error"].map(lambda v: f"{v:.1%}"))
    (out_dir / "fidelity.md").write_text(shown.to_markdown(index=False, floatfmt=".4g") + "\n", encoding="utf-8")
    document = {
        "tool": "secmoe-sim",
        "version": __version__,
        "command": "fidelity",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "efficiency": {"nvlink": efficiency.nvlink, "rdma": efficiency.rdma},
        "line_rates_bytes_per_s": LINE_RATES_BYTES_PER_S,
        "within_15_percent": bool((table["rel_error"] <= FIDELITY_TARGET).all()),
    }
    (out_dir / "metadata.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return [out_dir / "fidelity.csv", out_dir / "fidelity.md", out_dir / "metadata.json"]
