"""The tables ``run`` prints: each configuration beside dense on the same GPUs, and where its time goes.

Two tables, each under 100 columns: the comparison (best E of each entry and placement, GPUs,
wall-clock, GPU-time, speedup over the fastest dense entry on the same GPU count, parameters, FLOPs
per token) and the breakdown (compute, launch, exposed communication, peak memory). Rows on the
scenario's GPUs come first, then rows on other GPU counts (``expert_per_gpu``), each against dense
re-simulated on its own GPUs. A line under the tables says what the rows hold equal.
"""

from __future__ import annotations

import pandas as pd

from secmoe_sim.analysis.comparison import comparison_table
from secmoe_sim.report.text import table_text, wrapped
from secmoe_sim.simulation import Results
from secmoe_sim.spec.faults import describe as describe_fault
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.units import format_bytes, format_count, format_duration, format_flops
from secmoe_sim.spec.workload import SectionalMoEArchitecture


def pre_expert_lines(scenario: Scenario) -> list[str]:
    """What each sectional entry's pre-expert block holds, and what the layer outputs."""
    layer = scenario.workload.layer
    lines = []
    for arch in scenario.workload.architectures:
        if not isinstance(arch, SectionalMoEArchitecture):
            continue
        pre = arch.pre_expert
        if not pre.enabled:
            lines.append(wrapped(f"{arch.name}: no pre-expert block; the experts see all {layer.seq_len} tokens", indent="  "))
            continue
        parts = ["attention" + (" + FFN" if pre.ffn else " only")]
        if pre.sequence_reduction > 1:
            parts.append(f"{pre.pooling} pooling N -> N/{pre.sequence_reduction}")
        output = f"N = {layer.seq_len}" if pre.upsample or pre.sequence_reduction == 1 else f"N/{pre.sequence_reduction}"
        lines.append(
            wrapped(
                f"{arch.name}: pre-expert {', '.join(parts)}; experts{' + FFN' if arch.section_ffn else ''} on sections; "
                f"outputs {output} tokens; placements {', '.join(arch.placements)}",
                indent="  ",
            )
        )
    return lines


def _comparison_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in table.to_dict("records"):
        speedup = row["speedup_vs_dense"]
        rows.append(
            [
                str(row["label"]),
                str(row["placement"]) or "-",
                str(row["num_experts"]),
                str(row["num_gpus"]),
                format_duration(row["wall_clock_s"]) + (" OOM" if row["oom"] else ""),
                format_duration(row["gpu_seconds"]),
                "-" if pd.isna(speedup) else f"{speedup:.2f}x",
                format_count(row["params"]),
                format_flops(row["flops_per_token"]),
            ]
        )
    return rows


def _breakdown_rows(table: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(row["label"]),
            str(row["placement"]) or "-",
            str(row["num_experts"]),
            format_duration(row["compute_s"]),
            format_duration(row["launch_s"]),
            format_duration(row["exposed_communication_s"]),
            format_bytes(row["peak_memory_bytes"]),
            f"{row['tokens_per_s_per_gpu']:.3g}",
        ]
        for row in table.to_dict("records")
    ]


COMPARISON_HEADERS = ["entry", "placement", "E", "GPUs", "wall-clock", "GPU-time", "vs dense", "params", "FLOP/token"]
COMPARISON_RIGHT = (2, 3, 4, 5, 6, 7, 8)
BREAKDOWN_HEADERS = ["entry", "placement", "E", "compute", "launch", "exposed comm", "peak mem", "tok/s/GPU"]
BREAKDOWN_RIGHT = (2, 3, 4, 5, 6, 7)


def run_table(results: Results) -> str:
    """The run's comparison and breakdown tables, the pre-expert blocks, what is held equal, faults, OOM."""
    scenario = results.scenario
    layer, cluster = scenario.workload.layer, scenario.hardware
    table = comparison_table(results.summary, cluster.num_gpus)
    here, elsewhere = table[table["same_gpus_as_scenario"]], table[~table["same_gpus_as_scenario"]]
    lines = [
        wrapped(
            f"scenario {scenario.name} (seed {results.seed}): one layer, {layer.passes}; {cluster.num_gpus} x "
            f"{cluster.gpu.name}; d={layer.d_model}, N={layer.seq_len}, B={layer.batch}"
        ),
        *pre_expert_lines(scenario),
        "",
        wrapped(
            f"On the scenario's {cluster.num_gpus} GPUs, the best E of each entry and placement; 'vs dense' is the "
            "fastest dense entry's wall-clock over this one's:"
        ),
        table_text(COMPARISON_HEADERS, _comparison_rows(here), COMPARISON_RIGHT),
    ]
    if not elsewhere.empty:
        lines += [
            "",
            wrapped(
                "On other GPU counts (expert_per_gpu, G = E), the best E by GPU-time; 'vs dense' against dense "
                "simulated on the same GPUs:"
            ),
            table_text(COMPARISON_HEADERS, _comparison_rows(elsewhere), COMPARISON_RIGHT),
        ]
    lines += [
        "",
        "Where the time goes (on the GPU that finishes last):",
        table_text(BREAKDOWN_HEADERS, _breakdown_rows(table), BREAKDOWN_RIGHT),
        "",
        wrapped(
            f"Held equal between rows: d={layer.d_model}, N={layer.seq_len}, B={layer.batch} sequences, the GPU model "
            "and the fabric. GPUs, parameters and FLOP/token differ as shown. Speed only: model quality is not "
            "simulated (a sectional layer's experts hold 12 d^2 / E parameters in all)."
        ),
    ]
    for fault in scenario.faults:
        lines.append(wrapped(f"fault: {describe_fault(fault)}"))
    oom = results.summary[results.summary["oom"]]
    if not oom.empty:
        configurations = ", ".join(
            f"{label}{f' [{placement}]' if placement else ''} E={e}"
            for label, placement, e in zip(oom["label"], oom["placement"], oom["num_experts"])
        )
        lines.append(
            wrapped(
                f"out of memory (peak above {format_bytes(float(oom['memory_capacity_bytes'].iloc[0]))} per GPU, still "
                f"simulated): {configurations}"
            )
        )
    return "\n".join(lines)
