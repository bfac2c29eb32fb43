"""Torch microbenchmarks of the primitives the simulator times: GEMM, attention, memory, launch.

:func:`measure` runs a :class:`Grid` on a :class:`~secmoe_sim.calibrate.timing.Device` and returns
a :class:`~secmoe_sim.calibrate.trace.Trace`. The grids cover

* GEMMs ``(M, K, N)``: for every section width ``w`` from the minimum section width up, the shapes
  of a section's projections, ``(M, w, w)``, ``(M, w, 3w)``, ``(M, w, 4w)`` and ``(M, 4w, w)``,
  over a range of row counts ``M`` (tokens);
* scaled-dot-product attention over tokens, head dimension (down to 4 on a CPU), (batch x heads)
  instances and the causal flag, on query, key and value viewed out of one packed QKV tensor (the
  layout a fused QKV projection hands to attention; on this CPU strided views run about 10% slower
  than separate contiguous tensors at small head dimensions), each shape on both of torch's paths:
  the fused kernels and the math path, with the one the default dispatch takes marked;
* memory-bound ops (copy, softmax, elementwise add) over sizes, for the memory bandwidth;
* launch/dispatch overhead: loops of tiny ops, and a loop of ``E`` small section GEMMs (one slice
  and one matmul per section, as a sectional layer runs its experts).

Shapes above a FLOP cap are skipped so the default grid runs in minutes. Every timing uses fresh
random inputs (``normal_`` before each call), warm-up calls and at least 20 repeats
(:meth:`Device.time_s`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tqdm import tqdm

from secmoe_sim.calibrate import require_torch
from secmoe_sim.calibrate.timing import Device, environment, stable_time_s, torch_dtype
from secmoe_sim.calibrate.trace import (
    FUSED_PATH,
    MATH_PATH,
    MICROBENCHMARK_SOURCE,
    Trace,
    attention_counts,
    frame,
    gemm_counts,
    make_row,
    sample_statistics,
)

SECTION_FAMILIES = ((1, 1), (1, 3), (1, 4), (4, 1))  # (K, N) as multiples of the section width: w->w, w->3w, w->4w, 4w->w
SOFTMAX_ROW = 1024  # elements per softmax row
SECTION_LOOP_WIDTH = 16  # width of the sections in the launch loop
SECTION_LOOP_ROWS = 8
HEADS_PER_INSTANCE_GROUP = 8  # attention instances are split as (batch, heads) with at most this many heads
FUSED_SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")  # torch picks among these
NO_KERNEL = ("No viable backend", "No available kernel")  # torch's words when no enabled SDPA backend takes the inputs
MATH_SCORES_SHARE = 0.125  # the math path is timed only where its score matrix takes at most this share of memory


@dataclass(frozen=True)
class Grid:
    """What to measure and how often; :func:`grid_for` gives the shipped quick and default grids."""

    name: str
    gemm_shapes: tuple[tuple[int, int, int], ...]
    attention_shapes: tuple[tuple[int, int, int, int, int], ...]  # batch, heads, tokens, head_dim, causal
    memory_elements: tuple[int, ...]
    tiny_loop_ops: int
    section_loop_lengths: tuple[int, ...]
    comm_bytes: tuple[int, ...]
    warmup: int
    repeats: int

    def size(self) -> int:
        """Number of timed benchmarks in the grid (per dtype for the compute ones)."""
        return (
            len(self.gemm_shapes)
            + 2 * len(self.attention_shapes)  # both SDPA paths
            + 3 * len(self.memory_elements)
            + 3
            + len(self.section_loop_lengths)
        )


def gemm_shapes(widths, rows, max_flops: float) -> tuple[tuple[int, int, int], ...]:
    """Section-projection shapes ``(M, a*w, b*w)`` for every width and row count under the FLOP cap."""
    shapes = set()
    for width in widths:
        for k_factor, n_factor in SECTION_FAMILIES:
            for m in rows:
                shape = (m, k_factor * width, n_factor * width)
                if gemm_counts(*shape, 1, "fp32")["flops"] <= max_flops:
                    shapes.add(shape)
    return tuple(sorted(shapes))


def attention_shapes(tokens, head_dims, instances, max_flops: float) -> tuple[tuple[int, int, int, int, int], ...]:
    """``(batch, heads, tokens, head_dim, causal)`` for every combination under the FLOP cap."""
    shapes = []
    for count in instances:
        heads = min(count, HEADS_PER_INSTANCE_GROUP)
        batch = count // heads
        for n in tokens:
            for head_dim in head_dims:
                for causal in (0, 1):
                    if attention_counts(batch, heads, n, head_dim, False, "fp32")["flops"] <= max_flops:
                        shapes.append((batch, heads, n, head_dim, causal))
    return tuple(sorted(shapes))


def powers(low: int, high: int, step: int = 2) -> tuple[int, ...]:
    """``2**low, 2**(low+step), ...`` up to ``2**high``."""
    return tuple(2**exponent for exponent in range(low, high + 1, step))


def grid_for(kind: str, quick: bool) -> Grid:
    """The shipped grid for a device kind: ``quick`` (under a minute on 2 CPU cores) or default.

    Section widths run from 16 (CPU) or 64 (GPU), the smallest sections worth measuring, to the
    widths of a full layer; row counts and attention sizes to what one device runs per layer. The
    FLOP caps keep each timing around tens of milliseconds at most.
    """
    if kind == "cuda":
        if quick:
            return Grid(
                "quick",
                gemm_shapes(widths=powers(6, 12, 2), rows=powers(8, 14, 3), max_flops=1e12),
                attention_shapes(tokens=powers(9, 12, 3), head_dims=(16, 64, 128), instances=(8, 64), max_flops=1e12),
                memory_elements=powers(16, 26, 5),
                tiny_loop_ops=50,
                section_loop_lengths=(1, 8, 64),
                comm_bytes=powers(10, 26, 8),
                warmup=5,
                repeats=20,
            )
        return Grid(
            "default",
            gemm_shapes(widths=powers(6, 13, 1), rows=powers(8, 16, 2), max_flops=4e12),
            attention_shapes(tokens=powers(8, 14, 1), head_dims=(16, 32, 64, 128), instances=(8, 32, 128), max_flops=4e12),
            memory_elements=powers(12, 28, 2),
            tiny_loop_ops=200,
            section_loop_lengths=powers(0, 7, 1),
            comm_bytes=powers(4, 28, 2),
            warmup=10,
            repeats=30,
        )
    if quick:
        return Grid(
            "quick",
            gemm_shapes(widths=(16, 64, 256), rows=(64, 512, 2048), max_flops=2.5e8),
            attention_shapes(tokens=(64, 256), head_dims=(4, 16, 64), instances=(1, 8), max_flops=2e8),
            memory_elements=powers(10, 22, 4),
            tiny_loop_ops=20,
            section_loop_lengths=(1, 8, 32),
            comm_bytes=powers(4, 20, 8),
            warmup=2,
            repeats=20,
        )
    return Grid(
        "default",
        gemm_shapes(widths=powers(4, 10, 1), rows=powers(6, 13, 1), max_flops=8e9),
        attention_shapes(tokens=powers(6, 10, 1), head_dims=(4, 8, 16, 32, 64, 128), instances=(1, 4, 16, 64), max_flops=8e9),
        memory_elements=powers(10, 24, 2),
        tiny_loop_ops=100,
        section_loop_lengths=powers(0, 6, 1),
        comm_bytes=powers(4, 24, 2),
        warmup=3,
        repeats=25,
    )


def measure(device: Device, grid: Grid, dtypes: tuple[str, ...], threads: int) -> Trace:
    """Run ``grid`` on ``device`` for each dtype (communication, when the grid has sizes, once in the first dtype)."""
    rows = []
    started = environment(device, threads)
    with tqdm(total=grid.size() * len(dtypes), desc="microbenchmarks", unit="op", disable=None, leave=False) as progress:
        for dtype in dtypes:
            bench = _Bench(device, grid, dtype, progress)
            rows += bench.gemms() + bench.attention() + bench.memory() + bench.launch()
    disturbed = sum(1 for row in rows if row["attempts"] > 1)
    metadata = {
        **started,
        "grid": grid.name,
        "dtypes": list(dtypes),
        "warmup": grid.warmup,
        "repeats": grid.repeats,
        "source": "microbenchmarks",
        "shapes_measured_again": disturbed,
        "load_average_1min_after": os.getloadavg()[0],
    }
    if grid.comm_bytes:
        from secmoe_sim.calibrate.comm_bench import measure_comm

        comm_rows, comm_metadata = measure_comm(device, grid.comm_bytes, dtypes[0], grid.warmup, grid.repeats)
        rows += comm_rows
        metadata.update(comm_metadata)
    return Trace(rows=frame(rows), metadata=metadata)


class _Bench:
    """The benchmarks of one dtype on one device (one method per primitive)."""

    def __init__(self, device: Device, grid: Grid, dtype: str, progress):
        self.torch = require_torch()
        self.device, self.grid, self.dtype, self.progress = device, grid, dtype, progress
        self.torch_dtype = torch_dtype(dtype)

    def _tensor(self, *shape):
        return self.torch.randn(*shape, dtype=self.torch_dtype, device=self.device.torch_device)

    def _time(self, fn, inputs, repeats: int | None = None) -> dict:
        def refresh():
            for tensor in inputs:
                tensor.normal_()

        samples, attempts = stable_time_s(self.device, fn, refresh, self.grid.warmup, repeats or self.grid.repeats)
        self.progress.update(1)
        return sample_statistics(samples, attempts)

    def _row(self, op: str, primitive: str, stats: dict, source: str = MICROBENCHMARK_SOURCE, path: str = "", **shape) -> dict:
        return make_row(op, primitive, self.dtype, self.device.kind, stats, source, path, **shape)

    def gemms(self) -> list[dict]:
        rows = []
        for m, k, n in self.grid.gemm_shapes:
            a, b = self._tensor(m, k), self._tensor(k, n)
            stats = self._time(lambda a=a, b=b: self.torch.mm(a, b), (a, b))
            rows.append(self._row("mm", "gemm", stats, m=m, k=k, n=n, count=1))
        return rows

    def attention(self) -> list[dict]:
        """Every attention shape on both SDPA paths: torch's fused kernels (``path`` ``fused``) and the math
        path that writes the scores out (``math``); the row of the path torch's default dispatch takes for
        that layout has the source ``microbenchmark (default path)``. The math path is skipped where its
        score matrix would take more than :data:`MATH_SCORES_SHARE` of the device's memory (it also keeps
        the softmax's copy), and a path is skipped for a shape none of its kernels takes."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        sdpa = self.torch.nn.functional.scaled_dot_product_attention
        fused = [getattr(SDPBackend, name) for name in FUSED_SDPA_BACKENDS if hasattr(SDPBackend, name)]
        backends = {FUSED_PATH: fused, MATH_PATH: [SDPBackend.MATH]}
        rows = []
        for batch, heads, tokens, head_dim, causal in self.grid.attention_shapes:
            packed = self._tensor(batch, tokens, 3, heads, head_dim)  # what a fused QKV projection produces
            q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)  # strided views, as a layer passes them
            choice = self.torch._fused_sdp_choice(q, k, v, None, 0.0, bool(causal))  # what the default dispatch runs
            default = MATH_PATH if choice == SDPBackend.MATH.value else FUSED_PATH
            scores_bytes = batch * heads * tokens**2 * packed.element_size()
            for path, allowed in backends.items():
                if path == MATH_PATH and scores_bytes > MATH_SCORES_SHARE * self.device.memory_bytes:
                    self.progress.update(1)
                    continue  # the math path holds the whole score matrix (and its softmax): not on this device

                def attend(packed=packed, causal=causal, allowed=allowed):
                    q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)
                    with sdpa_kernel(allowed):
                        return sdpa(q, k, v, is_causal=bool(causal))

                try:
                    stats = self._time(attend, (packed,))
                except RuntimeError as error:  # torch has no kernel of this path for the shape (a head width)
                    if not any(words in str(error) for words in NO_KERNEL):
                        raise
                    self.progress.update(1)
                    continue
                source = f"{MICROBENCHMARK_SOURCE} (default path)" if path == default else MICROBENCHMARK_SOURCE
                shape = {"batch": batch, "heads": heads, "tokens": tokens, "head_dim": head_dim, "causal": causal}
                rows.append(self._row("scaled_dot_product_attention", "attention", stats, source, path, **shape))
        return rows

    def memory(self) -> list[dict]:
        element_bytes = self._tensor(1).element_size()
        rows = []
        for elements in self.grid.memory_elements:
            source, other, target = self._tensor(elements), self._tensor(elements), self._tensor(elements)
            matrix = source.view(-1, min(SOFTMAX_ROW, elements))
            stats = self._time(lambda target=target, source=source: target.copy_(source), (source,))
            rows.append(self._row("copy", "memory", stats, bytes=2 * elements * element_bytes))
            stats = self._time(lambda matrix=matrix: self.torch.softmax(matrix, dim=-1), (source,))
            rows.append(self._row("softmax", "memory", stats, bytes=2 * elements * element_bytes))
            stats = self._time(lambda source=source, other=other: self.torch.add(source, other), (source, other))
            rows.append(self._row("add", "memory", stats, bytes=3 * elements * element_bytes))
        return rows

    def launch(self) -> list[dict]:
        """Tiny ops back to back (dispatch cost per op) and loops over E small section GEMMs."""
        ops = self.grid.tiny_loop_ops
        x, y = self._tensor(1), self._tensor(1)
        a, b = self._tensor(1, 1), self._tensor(1, 1)
        tiny = {
            "tiny_add": lambda: [self.torch.add(x, y) for _ in range(ops)],
            "tiny_mm": lambda: [self.torch.mm(a, b) for _ in range(ops)],
            "tiny_copy": lambda: [y.copy_(x) for _ in range(ops)],
        }
        rows = [self._row(name, "launch", self._time(fn, (x, y, a, b)), count=ops) for name, fn in tiny.items()]
        width, rows_per_section = SECTION_LOOP_WIDTH, SECTION_LOOP_ROWS
        for sections in self.grid.section_loop_lengths:
            inputs = self._tensor(rows_per_section, sections * width)
            weights = self._tensor(sections, width, width)

            def section_loop(sections=sections, inputs=inputs, weights=weights):
                return [self.torch.mm(inputs[:, e * width : (e + 1) * width], weights[e]) for e in range(sections)]

            stats = self._time(section_loop, (inputs, weights))
            rows.append(self._row("section_loop", "launch", stats, count=sections, m=rows_per_section, k=width, n=width))
        return rows
