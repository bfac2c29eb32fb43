"""Read a torch.profiler Chrome trace (``export_chrome_trace``, ``record_shapes=True``) into a trace.

A profiler trace lists *CPU ops* (``cat: cpu_op``, with ``Input Dims``, ``Input type`` and, for
scalars, ``Concrete Inputs``) and, when CUDA was profiled, *GPU kernels* (``cat: kernel``) and CUDA
*runtime calls* (``cat: cuda_runtime``). A kernel names the CPU op that launched it by its
``External id``. The importer

* recognises the ops the simulator times: ``aten::mm``, ``addmm``, ``bmm``, ``baddbmm`` -> gemm
  (``M, K, N`` and the batch count from the input dims); the fused attention variants
  (``aten::_scaled_dot_product_flash_attention[_for_cpu]``, ``_efficient_attention``,
  ``_cudnn_attention``) -> attention (batch, heads, tokens, head dim from the query, the causal flag
  from the concrete inputs); copies, elementwise ops, softmax, activations and ``cat`` -> memory
  (bytes read and written from the input dims and element types; ``cat`` is left out because the
  trace does not record the element type of a tensor list). Composite ops (``aten::matmul``,
  ``aten::linear``, ``aten::scaled_dot_product_attention``) are not rows themselves: they dispatch
  to the recognised ops, which are;
* times a recognised op by its GPU kernels when the trace has kernels (each kernel goes to the
  nearest recognised op at or above the CPU op that launched it), else by the CPU op's duration
  (outermost recognised ops only, so nothing is counted twice);
* turns CUDA launch calls (``cudaLaunchKernel`` and relatives) into ``launch`` rows;
* aggregates identical (op, shape, dtype) instances into one row with their statistics.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from secmoe_sim.calibrate.trace import Trace, TraceError, file_sha256, frame, make_row, sample_statistics
from secmoe_sim.spec.units import DTYPE_BYTES, SECOND_FACTORS

CPU_OP_CATEGORIES = ("cpu_op", "Operator")
KERNEL_CATEGORY = "kernel"
RUNTIME_CATEGORIES = ("cuda_runtime", "cuda_driver")
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
PROFILER_DTYPES = {
    "float": "fp32",
    "c10::BFloat16": "bf16",
    "c10::Half": "fp16",
    "c10::Float8_e4m3fn": "fp8",
    "c10::Float8_e5m2": "fp8",
}

GEMM_OPERANDS = {"aten::mm": (0, 1), "aten::addmm": (1, 2), "aten::bmm": (0, 1), "aten::baddbmm": (1, 2)}
ATTENTION_CAUSAL_ARGUMENT = {  # position of is_causal among the op's inputs
    "aten::_scaled_dot_product_flash_attention_for_cpu": 4,
    "aten::_scaled_dot_product_flash_attention": 4,
    "aten::_scaled_dot_product_efficient_attention": 6,
    "aten::_scaled_dot_product_cudnn_attention": 6,
}
ELEMENTWISE = ("aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::mul", "aten::mul_", "aten::div", "aten::div_")
UNARY = ("aten::_softmax", "aten::_log_softmax", "aten::gelu", "aten::relu", "aten::silu", "aten::tanh")
MEMORY_OPS = ("aten::copy_",) + ELEMENTWISE + UNARY


def load_events(path: Path) -> dict:
    """The JSON document of a Chrome trace (``.json`` or ``.json.gz``); a one-line error otherwise."""
    if not path.is_file():
        raise TraceError(f"{path}: no such profile")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError) as error:
        raise TraceError(f"{path}: not a JSON Chrome trace: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict) or not isinstance(document.get("traceEvents"), list):
        raise TraceError(f"{path}: not a Chrome trace (no traceEvents list)")
    return document


def import_profile(path: str | Path) -> Trace:
    """A :class:`Trace` of the recognised ops of a torch.profiler Chrome trace."""
    path = Path(path)
    document = load_events(path)
    events = [e for e in document["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X" and "dur" in e]
    ops = [e for e in events if e.get("cat") in CPU_OP_CATEGORIES]
    kernels = [e for e in events if e.get("cat") == KERNEL_CATEGORY]
    device = "cuda" if kernels else "cpu"
    parents = _parents(ops)
    durations_s, unattributed = _kernel_durations(ops, kernels, parents) if kernels else (_cpu_durations(ops, parents), 0)

    samples: dict[tuple, list[float]] = defaultdict(list)
    skipped = 0
    for index, duration_s in durations_s.items():
        described = describe_op(ops[index])
        if described is None:
            skipped += 1
            continue
        samples[described].append(duration_s)
    for event in events:
        if event.get("cat") in RUNTIME_CATEGORIES and event.get("name") in LAUNCH_CALLS:
            samples[(event["name"], "launch", "", (("count", 1.0),))].append(event["dur"] * SECOND_FACTORS["us"])
    if not any(key[1] != "launch" for key in samples):
        raise TraceError(
            f"{path}: no GEMM, attention or memory op with input shapes found (record the profile with record_shapes=True)"
        )

    rows = []
    for (op, primitive, dtype, shape), values in sorted(samples.items()):
        rows.append(
            make_row(
                op,
                primitive,
                dtype or _main_dtype(samples),
                device,
                sample_statistics(np.array(values)),
                "profile",
                **dict(shape),
            )
        )
    properties = document.get("deviceProperties") or [{}]
    metadata = {
        "source": "profile",
        "profile": path.name,
        "profile_sha256": file_sha256(path),
        "device": device,
        "device_name": properties[0].get("name", "unknown") if device == "cuda" else "unknown",
        "ops_imported": int(sum(len(v) for k, v in samples.items() if k[1] != "launch")),
        "ops_skipped_unsupported_dtype": skipped,
        "kernels_unattributed": unattributed,
    }
    return Trace(rows=frame(rows), metadata=metadata)


def _main_dtype(samples: dict) -> str:
    """The most common dtype of the imported ops (launch rows take it; they have none of their own)."""
    counts: dict[str, int] = defaultdict(int)
    for (_, primitive, dtype, _), values in samples.items():
        if primitive != "launch":
            counts[dtype] += len(values)
    return max(counts, key=lambda dtype: counts[dtype])


def _parents(ops: list[dict]) -> list[int | None]:
    """Index of each op's enclosing op on the same thread (time containment), or None."""
    parents: list[int | None] = [None] * len(ops)
    by_thread: dict[tuple, list[int]] = defaultdict(list)
    for index, op in enumerate(ops):
        by_thread[(op.get("pid"), op.get("tid"))].append(index)
    for indices in by_thread.values():
        indices.sort(key=lambda i: (ops[i]["ts"], -ops[i]["dur"]))
        stack: list[int] = []
        for index in indices:
            start = ops[index]["ts"]
            while stack and ops[stack[-1]]["ts"] + ops[stack[-1]]["dur"] < start:
                stack.pop()
            parents[index] = stack[-1] if stack else None
            stack.append(index)
    return parents


def _recognised(op: dict) -> bool:
    name = op.get("name")
    return name in GEMM_OPERANDS or name in ATTENTION_CAUSAL_ARGUMENT or name in MEMORY_OPS


def _recognised_at_or_above(index: int | None, ops: list[dict], parents: list[int | None]) -> int | None:
    while index is not None and not _recognised(ops[index]):
        index = parents[index]
    return index


def _cpu_durations(ops: list[dict], parents: list[int | None]) -> dict[int, float]:
    """CPU-only trace: each outermost recognised op's own duration, seconds."""
    durations = {}
    for index, op in enumerate(ops):
        if _recognised(op) and _recognised_at_or_above(parents[index], ops, parents) is None:
            durations[index] = op["dur"] * SECOND_FACTORS["us"]
    return durations


def _kernel_durations(ops: list[dict], kernels: list[dict], parents: list[int | None]) -> tuple[dict[int, float], int]:
    """GPU trace: each recognised op's summed kernel time (seconds), and the number of kernels no
    recognised op launched (their time is not imported)."""
    by_id = {(op.get("args") or {}).get("External id"): index for index, op in enumerate(ops)}
    durations: dict[int, float] = defaultdict(float)
    unattributed = 0
    for kernel in kernels:
        launcher = by_id.get((kernel.get("args") or {}).get("External id"))
        owner = _recognised_at_or_above(launcher, ops, parents)
        if owner is None:
            unattributed += 1
        else:
            durations[owner] += kernel["dur"] * SECOND_FACTORS["us"]
    return dict(durations), unattributed


def describe_op(op: dict) -> tuple | None:
    """``(op, primitive, dtype, shape)`` of a recognised op, or None for a dtype the simulator lacks."""
    args = op.get("args") or {}
    name = op["name"]
    dims, types = args.get("Input Dims") or [], args.get("Input type") or []
    short = name.removeprefix("aten::")
    if name in GEMM_OPERANDS:
        first, second = GEMM_OPERANDS[name]
        dtype = PROFILER_DTYPES.get(types[first] if len(types) > first else "")
        if dtype is None or len(dims) <= second:
            return None
        a, b = dims[first], dims[second]
        count = a[0] if len(a) == 3 else 1
        return short, "gemm", dtype, (("m", float(a[-2])), ("k", float(a[-1])), ("n", float(b[-1])), ("count", float(count)))
    if name in ATTENTION_CAUSAL_ARGUMENT:
        dtype = PROFILER_DTYPES.get(types[0] if types else "")
        if dtype is None or not dims or len(dims[0]) != 4:
            return None
        batch, heads, tokens, head_dim = dims[0]
        concrete = args.get("Concrete Inputs") or []
        position = ATTENTION_CAUSAL_ARGUMENT[name]
        causal = 1.0 if len(concrete) > position and concrete[position] == "True" else 0.0
        shape = (
            ("batch", float(batch)),
            ("heads", float(heads)),
            ("tokens", float(tokens)),
            ("head_dim", float(head_dim)),
            ("causal", causal),
        )
        return short, "attention", dtype, shape
    inputs = _tensor_inputs(dims, types)
    tensors = [(dtype, elements) for dtype, elements in inputs if dtype is not None and dtype in DTYPE_BYTES]
    if not tensors or len(tensors) != len(inputs):
        return None
    dtype = tensors[0][0]
    input_bytes = sum(DTYPE_BYTES[d] * elements for d, elements in tensors)
    moved: float
    if name == "aten::copy_":  # destination and source: one write, one read
        moved = input_bytes
    elif name in UNARY:
        moved = 2 * input_bytes
    else:
        moved = input_bytes + DTYPE_BYTES[dtype] * max(elements for _, elements in tensors)
    return short, "memory", dtype, (("bytes", float(moved)),)


def _tensor_inputs(dims: list, types: list) -> list[tuple[str | None, float]]:
    """``(dtype, elements)`` of every tensor input (scalars skipped; None: a dtype the simulator lacks)."""
    tensors: list[tuple[str | None, float]] = []
    for shape, kind in zip(dims, types):
        if shape and kind in PROFILER_DTYPES:
            tensors.append((PROFILER_DTYPES[kind], float(np.prod(shape))))
        elif shape:
            tensors.append((None, float(np.prod(shape))))
    return tensors
