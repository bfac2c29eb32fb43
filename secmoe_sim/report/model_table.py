"""What ``run`` prints for a scenario with a ``model`` section: the step of each configuration, and where its time goes.

Two tables under 100 columns: per entry and placement the E with the shortest step that fits in
memory (else the shortest), with step time, tokens/s per GPU, MFU, peak memory and the speed against
the dense model on the same GPUs; then the step's phases. A line says what the rows hold equal.
"""

from __future__ import annotations

import pandas as pd

from secmoe_sim.analysis.model_step import ModelResults
from secmoe_sim.report.text import table_text, wrapped
from secmoe_sim.spec.units import format_bytes, format_duration


def best_model_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (label, placement): the row with the shortest step among those that fit in memory, else the shortest."""
    ranked = summary.assign(_fits=~summary["oom"]).sort_values(["_fits", "step_time_s"], ascending=[False, True], kind="stable")
    best = ranked.drop_duplicates(["label", "placement"]).drop(columns="_fits")
    order = {key: index for index, key in enumerate(dict.fromkeys(zip(summary["label"], summary["placement"])))}
    return (
        best.assign(_order=[order[key] for key in zip(best["label"], best["placement"])])
        .sort_values("_order")
        .drop(columns="_order")
    )


def model_table(found: ModelResults) -> str:
    scenario, model, layer = found.scenario, found.scenario.model, found.scenario.workload.layer
    assert model is not None
    best = best_model_rows(found.summary)
    dense = best[best["architecture"] == "dense"]
    dense_s = float(dense["step_time_s"].min()) if len(dense) else float("nan")
    positions = model.entry_positions()
    step = {"training_step": "training step", "decode": "decode step", "forward": "forward pass"}.get(layer.passes, layer.passes)
    lines = [
        "",
        wrapped(
            f"Model: {model.layers} layers, {len(positions)} of them the entry's, the others {model.other_layers}; "
            f"vocabulary {model.vocab_size}; one {step} of {layer.batch} sequences"
            + (f" ({model.optimizer}, recompute {model.recompute}, {model.gradient_sync})" if layer.training_step else "")
            + (f" against a KV cache of {layer.context_length} tokens" if layer.decoding else "")
            + "; per entry and placement the E with the shortest step that fits in memory:"
        ),
    ]
    rows = []
    for row in best.to_dict("records"):
        speedup = dense_s / row["step_time_s"]
        rows.append(
            [
                str(row["label"]),
                str(row["placement"]) or "-",
                str(row["num_experts"]),
                format_duration(row["step_time_s"]),
                f"{row['tokens_per_s_per_gpu']:.4g}",
                f"{row['mfu']:.1%}",
                format_bytes(row["peak_memory_bytes"]) + (" OOM" if row["oom"] else ""),
                "-" if pd.isna(speedup) else f"{speedup:.2f}x",
            ]
        )
    lines.append(
        table_text(
            ["entry", "placement", "E", "step", "tok/s/GPU", "MFU", "peak mem", "vs dense"], rows, right=(2, 3, 4, 5, 6, 7)
        )
    )
    lines += ["", "Where the step goes (critical path):"]
    training = layer.training_step
    phases = []
    for row in best.to_dict("records"):
        entry = [str(row["label"]), str(row["placement"]) or "-", str(row["num_experts"])]
        if training:
            times = [row[c] for c in ("forward_s", "backward_s", "sync_exposed_s")] + [
                row["optimizer_s"] + row["weight_gather_s"]
            ]
            times += [row["entry_layers_s"], row["embedding_head_s"]]
            phases.append(entry + [format_duration(t) for t in times])
        else:
            times = [row[c] for c in ("step_time_s", "entry_layers_s", "other_layers_s", "embedding_head_s")]
            phases.append(entry + [format_duration(t) for t in times] + [format_bytes(row["kv_cache_bytes"])])
    if training:
        headers = ["entry", "placement", "E", "forward", "backward", "sync exp.", "optimizer", "entry lyrs", "emb+head"]
    else:
        headers = ["entry", "placement", "E", "step", "entry lyrs", "other lyrs", "emb+head", "KV cache"]
    lines.append(table_text(headers, phases, right=tuple(range(2, len(headers)))))
    terms = {
        "training_step": "backward includes recomputation; 'sync exp.' is the gradient synchronisation the backward did not hide; ",
        "decode": "'step' is the time per output token; ",
    }.get(layer.passes, "'step' is one forward pass of the whole model; ")
    lines.append(
        wrapped(
            f"Held equal between rows: the {model.layers} layers' dimensions (d={layer.d_model}, N={layer.seq_len}), the "
            f"positions of the entry's layers, the other layers, the vocabulary, the batch and the {scenario.hardware.num_gpus} "
            f"GPUs. 'vs dense': the dense model's step over this one's. {terms}'entry lyrs' is the entry's layers' share, "
            "'emb+head' the embedding and the LM head's (docs/model.md, section 10)."
        )
    )
    return "\n".join(lines)
