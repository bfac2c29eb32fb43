"""The committed validation report: ``reports/validation/README.md`` with its answer, tables and figures.

Every sentence of the findings is computed from the validation table and the recommendations, so
regenerating the report (``secmoe-sim report``) after a model change rewrites them consistently.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from secmoe_sim.analysis.alpha import OBJECTIVES
from secmoe_sim.analysis.overhead_fit import PAPER_R2
from secmoe_sim.analysis.recommend import Configuration, Recommendation
from secmoe_sim.analysis.validation import Validation, run_validation
from secmoe_sim.report.validation import markdown_table, write_validation
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.units import format_duration
from secmoe_sim.version import __version__

GOOD_REGRET = 0.05  # a prediction whose E costs at most 5% more than the simulated best counts as good

NOTATION = """| paper | meaning | here | notes |
|---|---|---|---|
| `A` | cost of the QKV projections, falling as `1/E` | `K / E` | `K` also holds the out-projection and the section FFN at `E = 1` |
| attention cost | the experts' attention-score work | `A` | constant in `E` when summed over experts (`E * N'^2 * d/E`); falls per device only when experts sit on different GPUs |
| (not in the paper) | the pre-expert block, sequence reduction, mixing, upsampling | `C_pre` | constant in `E` |
| `alpha E^2` | routing, communication and synchronisation overhead | `alpha E^2` and five other forms fitted to the simulated overhead | `alpha` in seconds, and in FLOP-equivalents (seconds x the layer's effective FLOP/s at `E = 1`) |
| `E_opt = (A / (2 alpha))^(1/3)` | the closed form | `(K / (2 alpha))^(1/3)` (total view); the root of `2 alpha E^4 + beta E^3 - a1 E - 2 a2` (per device) | docs/model.md, section 6 |"""


def _share(count: int, total: int) -> str:
    return f"{count} of {total}"


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _name(configuration: Configuration) -> str:
    placement = f" [{configuration.placement}]" if configuration.placement else ""
    experts = f" E = {configuration.num_experts}" if configuration.architecture == "sectional_moe" else ""
    return f"`{configuration.label}`{placement}{experts}"


def headline(table: pd.DataFrame, payoff: dict[str, Recommendation]) -> str:
    """The first paragraph: the paper's question answered with this run's numbers."""
    base = table[table["varied"] == "base"]
    holds = base[base["paper_form_holds"]]
    sends = base[base["placement"] != "replicated"]
    hardware_good = int((base["regret_hardware_alpha"] <= GOOD_REGRET).sum())
    physical_good = int((base["regret_physical_form"] <= GOOD_REGRET).sum())
    censored = base[base["at_bound"].fillna("").astype(str) != ""]
    pays = []
    for name, found in payoff.items():
        if found.pays_off and found.best_sectional is not None:
            ratio = found.best_sectional.params / found.fastest_dense.params if found.fastest_dense else float("nan")
            pays.append(f"{name}: {_name(found.best_sectional)}, with {ratio:.2f}x the dense layer's parameters")
    inside = base[base["at_bound"].fillna("").astype(str) == ""]
    interior = (
        "; ".join(
            f"{r['base_scenario']} `{r['label']}` [{r['placement']}] {r['view']}: E = {r['e_opt_simulated']}"
            for r in inside.to_dict("records")
        )
        or "none"
    )
    holding = ", ".join(
        sorted(
            f"{r['base_scenario']} `{r['label']}` [{r['placement']}] ({r['view']} view"
            + (", where the overhead is only kernel launches: nothing is sent)" if r["placement"] == "replicated" else ")")
            for r in holds.to_dict("records")
        )
    )
    return (
        f"**Does the paper's `alpha E^2` hold?** Rarely: it is the best-ranked overhead form, with R² of at least "
        f"{PAPER_R2:g}, in {_share(len(holds), len(base))} cases of the shipped scenarios"
        + (f" ({holding})" if holding else "")
        + f" and in {_share(int(table['paper_form_holds'].sum()), len(table))} with the half- and double-size variants. "
        f"Where experts sit on other GPUs ({len(sends)} cases) the overhead follows the simulator's physical form "
        f"(messages posted per GPU, which stop growing once a group spans its GPUs, plus the bottleneck link's "
        f"bytes) in {_share(int((sends['best_form'] == 'physical').sum()), len(sends))}; where they sit on the token "
        f"owner (`replicated`) there is no exchange and the overhead is a constant. **Does the closed form pick a "
        f"good E?** With the alpha a user has before simulating (one empty message per collective, from the "
        f"hardware), the E it picks is within {GOOD_REGRET:.0%} of the simulated best in "
        f"{_share(hardware_good, len(base))} cases (median regret {_pct(base['regret_hardware_alpha'].median())}, "
        f"worst {_pct(base['regret_hardware_alpha'].max())}); with alpha fitted to the very simulation it is "
        f"judged on, median {_pct(base['regret'].median())}, worst {_pct(base['regret'].max())}. The physical "
        f"form from the same hardware description, bandwidth included, is within {GOOD_REGRET:.0%} in "
        f"{_share(physical_good, len(base))} (worst {_pct(base['regret_physical_form'].max())}). **What decides the "
        f"optimum instead?** Limits, not a balance against `alpha E^2`: {_share(len(censored), len(base))} simulated "
        f"optima sit at a bound ("
        + ", ".join(f"{name}: {count}" for name, count in censored["at_bound"].value_counts().items())
        + "), mostly the narrowest section `min_section_width` allows, because the fastest placement sends "
        f"nothing and more sections only shrink the projections. The interior optima are {interior}. "
        f"**Does it pay off?** Against the fastest dense layer on the same GPUs, the best sectional "
        f"configuration that fits in memory is faster on {_share(len(pays), len(payoff))} shipped scenarios"
        + (f" ({', '.join(pays)})" if pays else "")
        + "; the table below gives each, against the dense, the dense funnel pair and the token-MoE baselines. "
        "These are the simulator's answers on datasheet-and-published-measurement presets; how close the "
        "simulator is to real machines is `reports/fidelity/` and `reports/calibration/`."
    )


def payoff_table(payoff: dict[str, Recommendation]) -> str:
    """Per scenario and sectional entry: its best configuration and its speedup over each baseline on the same GPUs."""
    rows = []
    for name, found in payoff.items():
        entries: dict[str, Configuration] = {}
        for configuration in found.sectional:
            current = entries.get(configuration.label)
            if configuration.num_gpus == found.scenario.hardware.num_gpus and (
                current is None or configuration.wall_clock_s < current.wall_clock_s
            ):
                entries[configuration.label] = configuration
        if not entries:
            rows.append({"scenario": name, "sectional entry: best configuration that fits": "none fits"})
        for best in entries.values():
            row = {
                "scenario": name,
                "sectional entry: best configuration that fits": f"{_name(best)}: {format_duration(best.wall_clock_s)}",
                "params vs dense": f"{best.params / found.fastest_dense.params:.2f}x" if found.fastest_dense else "-",
            }
            for baseline in found.baselines:
                row[f"vs {baseline.label}"] = f"{baseline.wall_clock_s / best.wall_clock_s:.2f}x"
            rows.append(row)
    return pd.DataFrame(rows).fillna("-").to_markdown(index=False)


def _trend(values: pd.Series) -> str:
    """'grows', 'falls', 'stays the same' or 'is not monotone' for a sequence ordered by the varied dimension."""
    diffs = values.diff().dropna()
    if (diffs == 0).all():
        return "stays the same"
    if (diffs >= 0).all():
        return "grows"
    if (diffs <= 0).all():
        return "falls"
    return "is not monotone"


def trend_findings(table: pd.DataFrame) -> list[str]:
    """Whether the simulated E_opt grows with sequence length and width, stated only for uncensored series."""
    lines = []
    per_device = table[table["view"] == "per_device"]
    censored_series = 0
    for dimension in ("seq_len", "d_model"):
        rows = per_device[per_device["varied"].isin(["base", dimension])]
        for (scenario, label, placement, mode), group in rows.groupby(["base_scenario", "label", "placement", "sweep_mode"]):
            group = group.sort_values(dimension)
            if len(group) < 2:
                continue
            if (group["at_bound"].fillna("").astype(str) != "").any():
                censored_series += 1
                continue
            values = ", ".join(str(int(v)) for v in group[dimension])
            lines.append(
                f"- {scenario} `{label}` [{placement}], {mode}: with {dimension} = {values}, the simulated E_opt "
                f"({', '.join(str(int(v)) for v in group['e_opt_simulated'])}) {_trend(group['e_opt_simulated'])}; "
                f"the hardware-alpha E_opt ({', '.join(str(int(v)) for v in group['e_opt_hardware_feasible'])}) "
                f"{_trend(group['e_opt_hardware_feasible'])}."
            )
    lines.append(
        f"- {censored_series} series are left out: at least one of their optima sits at a bound, so a trend would "
        "only report where the bound is."
    )
    return lines


def regret_table(table: pd.DataFrame) -> str:
    """Median and worst regret of each prediction, per sweep mode and view (shipped scenarios)."""
    base = table[table["varied"] == "base"]
    rows = []
    for (mode, view), group in base.groupby(["sweep_mode", "view"]):
        row = {"sweep mode": mode, "view": view, "objective": OBJECTIVES[str(view)], "cases": len(group)}
        for column, name in (
            ("regret", "fitted alpha"),
            ("regret_hardware_alpha", "hardware alpha"),
            ("regret_physical_form", "physical form"),
        ):
            row[f"{name}: median"] = _pct(group[column].median())
            row[f"{name}: worst"] = _pct(group[column].max())
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def report_text(validation: Validation, names: list[str]) -> str:
    """The README of the validation report."""
    table = validation.table
    base = table[table["varied"] == "base"]
    sections = [
        "# Validation: the paper's analytical model against the simulation",
        "",
        headline(table, validation.payoff),
        "",
        f"Generated by `secmoe-sim report` (secmoe-sim {__version__}); regenerate with that one command. Scenarios: "
        + ", ".join(f"`{n}`" for n in names)
        + ", each also with half and twice its sequence length and model width. Every sectional entry is simulated "
        "at every feasible E in its sweep mode, under each placement; each (entry, placement) is a case, in the "
        "per-device view (objective: wall-clock) and, for `expert_per_gpu` where the GPU count grows with E, also "
        "in the total view (objective: GPU-seconds). A `fixed_cluster` case is reported once: its two views are the "
        "same measurement. The overhead is fitted with six forms; a form takes part in the AICc ranking only with "
        "at least three more points than coefficients. `validation.csv` holds every case, `alpha.json` every fit "
        "with standard errors, `metadata.json` the scenario hashes and the tool version.",
        "",
        "## The paper's notation and ours",
        "",
        NOTATION,
        "",
        "## Regret of each prediction (shipped scenarios)",
        "",
        (
            "Regret is the view's objective at the predicted E over the simulated minimum, minus one. *Fitted alpha*: "
            "the paper's closed form with alpha fitted to the same simulation (in-sample). *Hardware alpha*: the same "
            "with alpha from the hardware description, one empty message per collective, what a user has before "
            "simulating. *Physical form*: the busiest GPU's cost-model compute plus the exchange bound (messages x "
            "per-message cost + the bottleneck link's bytes / bandwidth + latency), from the hardware description."
        ),
        "",
        regret_table(table),
        "",
        (
            "The physical form is the simulator's own rules in closed form: its agreement says the simulated optimum "
            "is explained by message counts, link bandwidth and where the experts sit, not by an `E^2` law. It is no "
            "evidence about real machines; that is what the fidelity table and the calibration are for."
        ),
        "",
        "## What the best sectional configuration buys",
        "",
        (
            "On each scenario's own GPUs, among configurations that fit in memory: each `vs` column is that "
            "baseline's wall-clock over the sectional configuration's (above 1: the sectional layer is faster). Speed "
            "only: model quality is not simulated, and a sectional layer's experts hold `12 d^2 / E` parameters in "
            "all. `dense-funnel` is the sectional layer at `E = 1`, unsplit; `token-moe` is the token-MoE preset "
            "(top-2 of full-width experts, several times the dense layer's parameters), `token-moe-top1` the one "
            "with the dense layer's active parameters."
        ),
        "",
        payoff_table(validation.payoff),
        "",
        "## Does E_opt grow with sequence length and width, as the paper says?",
        "",
        *trend_findings(table),
        "",
        "## Cases of the shipped scenarios",
        "",
        markdown_table(base),
        "",
        (
            "Columns: `E fitted`, `E hw alpha`, `E physical` are the feasible E each prediction picks, `E simulated` "
            "the argmin of the objective, `at bound` the limit that censors it (empty: interior). Every case with its "
            "variants: [validation.md](validation.md)."
        ),
        "",
    ]
    warned = sorted({w for w in base["warnings"].fillna("") if w})
    if warned:
        sections += ["Warnings: " + "; ".join(warned) + ".", ""]
    sections += [
        "## Figures",
        "",
        "Predicted against simulated E_opt, every case:",
        "",
        "![E_opt scatter](e_opt_scatter.png)",
        "",
        "![E_opt against sequence length](e_opt_vs_seq_len.png)",
        "",
        "![E_opt against model width](e_opt_vs_d_model.png)",
        "",
    ]
    for name in names:
        sections += [
            f"### {name}",
            "",
            f"![S(E) of {name}](s_of_e_{name}.png)",
            "",
            f"![overhead fits of {name}](overhead_fits_{name}.png)",
            "",
        ]
        if name in validation.simulations:
            sections += [f"![Gantt chart of {name}](gantt_{name}.png)", ""]
    return "\n".join(sections)


def write_validation_report(scenarios: list[Scenario], out_dir: Path, progress: bool = False) -> Path:
    """Run the validation of ``scenarios`` and write the report's README.md beside its tables and figures."""
    validation = run_validation(scenarios, with_variants=True, progress=progress)
    write_validation(validation, out_dir, scenarios)
    readme = out_dir / "README.md"
    readme.write_text(report_text(validation, [s.name for s in scenarios]), encoding="utf-8")
    return readme
