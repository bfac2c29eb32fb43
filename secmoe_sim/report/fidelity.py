"""The files of ``fidelity``: the table of published against simulated figures, and what produced it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import yaml

from secmoe_sim.analysis.fidelity import MEDIAN_TARGET, WORST_TARGET, Fidelity, fit_rule
from secmoe_sim.analysis.fidelity.presets import PRESETS
from secmoe_sim.spec.communication import Stack
from secmoe_sim.version import __version__


def summary_markdown(fidelity: Fidelity) -> str:
    """Per stack and band: cases, fit cases, and the predictions' median and worst error against the targets."""
    summary = fidelity.summary()
    shown = summary.assign(
        median_error=summary["median_error"].map(lambda v: f"{v:.1%}"),
        worst_error=summary["worst_error"].map(lambda v: f"{v:.1%}"),
    )
    return shown.to_markdown(index=False)


def write_fidelity(fidelity: Fidelity, out_dir: Path) -> list[Path]:
    """``fidelity.csv``, ``fidelity.md`` (per band and stack, then every case) and ``metadata.json``
    (each stack's fitted parameters, the fit rule, the presets, tool version, date)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = fidelity.table
    table.to_csv(out_dir / "fidelity.csv", index=False)
    shown = table.assign(rel_error=table["rel_error"].map(lambda v: f"{v:.1%}"))
    fitted = sum(len(stack.values) for stack in fidelity.stacks.values())
    lines = [
        "# Fidelity: simulated against published",
        "",
        (
            f"{len(table)} cases, {int((table['role'] == 'prediction').sum())} predictions; {fitted} parameters fitted "
            f"on the {int((table['role'] == 'fit').sum())} fit cases. Targets per band and stack: median prediction "
            f"error within {MEDIAN_TARGET:.0%}, worst within {WORST_TARGET:.0%}."
        ),
        "",
        summary_markdown(fidelity),
        "",
        pd.DataFrame(shown).to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    (out_dir / "fidelity.md").write_text("\n".join(lines), encoding="utf-8")
    document = {
        "tool": "secmoe-sim",
        "version": __version__,
        "command": "fidelity",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fit_rule": fit_rule(),
        "parameters_fitted": fitted,
        "stacks": {name: {"parameters": stack.document(), "sweeps": stack.sweeps} for name, stack in fidelity.stacks.items()},
        "presets": {name: preset.__dict__ for name, preset in PRESETS.items()},
        "summary": json.loads(fidelity.summary().to_json(orient="records")),
    }
    (out_dir / "metadata.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    stacks = []
    for name, fitted_stack in fidelity.stacks.items():
        path = out_dir / f"stack-{name}.yaml"
        path.write_text(stack_yaml(name, fitted_stack.stack), encoding="utf-8")
        stacks.append(path)
    return [out_dir / "fidelity.csv", out_dir / "fidelity.md", out_dir / "metadata.json", *stacks]


def stack_yaml(name: str, stack: Stack) -> str:
    """A fitted stack as a stack file a scenario can name (``communication: {default: path}``)."""
    header = (
        f"# The {name} stack as `secmoe-sim fidelity` (secmoe-sim {__version__}) fitted it on the fit cases of its\n"
        "# table (docs/fidelity.md). Seconds and bytes; the unlisted protocol constants are NCCL's own.\n"
    )
    return header + yaml.safe_dump(stack.model_dump(mode="json"), sort_keys=False, width=120)
