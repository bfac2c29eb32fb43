"""Collectives between real processes with torch.distributed: all-to-all, all-to-all-v, all-gather.

On the CPU, two local processes talk through gloo over loopback (``127.0.0.1``, a free port); on a
machine with several CUDA GPUs, one process per GPU talks through NCCL. The processes are started
with ``torch.multiprocessing.spawn``. Each collective is timed on every rank after a barrier (so
the ranks start together) with the rank's :class:`~secmoe_sim.calibrate.timing.Device`; a
repeat's time is the slowest rank's, because a collective ends for the layer when its last rank
leaves it.

The size of a row is the payload of one point-to-point message, the quantity an alpha-beta link
model charges for: an all-to-all with a send buffer of ``P x c`` elements sends ``c`` to each of the
``P - 1`` peers; the all-to-all-v sends every other peer twice what it keeps for itself (its row
records the mean message to a peer); an all-gather of ``c`` elements per rank delivers ``c`` from
every peer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import tempfile
from pathlib import Path

from secmoe_sim.calibrate import CalibrationError, require_torch
from secmoe_sim.calibrate.timing import Device, make_device, torch_dtype
from secmoe_sim.calibrate.trace import MICROBENCHMARK_SOURCE, make_row, sample_statistics
from secmoe_sim.spec.units import DTYPE_BYTES

CPU_WORLD_SIZE = 2
COLLECTIVES = ("all_to_all", "all_to_all_v", "all_gather")
INIT_TIMEOUT = dt.timedelta(seconds=120)
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def comm_setup(device: Device) -> tuple[int, str, str]:
    """World size, backend and path name for the device's collectives (world size 0: none possible)."""
    if device.kind == "cpu":
        return CPU_WORLD_SIZE, "gloo", "gloo:loopback"
    return require_torch().cuda.device_count(), "nccl", "nccl:intra_node"


def measure_comm(device: Device, sizes_bytes: tuple[int, ...], dtype: str, warmup: int, repeats: int) -> tuple[list[dict], dict]:
    """Trace rows of every collective at every message size, and metadata about the run."""
    world_size, backend, path = comm_setup(device)
    if world_size < 2:
        return [], {"comm": f"skipped: {backend} needs at least 2 devices, found {world_size}"}
    torch = require_torch()
    with tempfile.TemporaryDirectory(prefix="secmoe-comm-") as folder:
        results = Path(folder) / "results.json"
        arguments = (device.kind, world_size, backend, free_port(), tuple(sizes_bytes), dtype, warmup, repeats, str(results))
        try:
            torch.multiprocessing.spawn(_worker, args=arguments, nprocs=world_size, join=True)
        except Exception as error:  # noqa: BLE001 - a failed rank: report its last line, not a traceback
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            raise CalibrationError(
                f"communication benchmark ({backend}, {world_size} processes) failed: "
                f"{lines[-1] if lines else type(error).__name__}"
            ) from None
        measured = json.loads(results.read_text(encoding="utf-8"))
    rows = [
        make_row(
            entry["op"],
            "comm",
            dtype,
            device.kind,
            entry["stats"],
            MICROBENCHMARK_SOURCE,
            path=path,
            bytes=entry["bytes"],
            world_size=world_size,
        )
        for entry in measured["rows"]
    ]
    metadata = {
        "comm": f"{backend}, {world_size} processes",
        "comm_backend": backend,
        "comm_world_size": world_size,
        "comm_threads_per_process": measured["threads"],
    }
    return rows, metadata


def _worker(
    rank: int,
    kind: str,
    world_size: int,
    backend: str,
    port: int,
    sizes_bytes: tuple[int, ...],
    dtype: str,
    warmup: int,
    repeats: int,
    results_path: str,
) -> None:
    """One rank: time every collective at every size; rank 0 writes the slowest-rank statistics."""
    torch = require_torch()
    import torch.distributed as dist

    if kind == "cpu":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        torch.set_num_threads(1)  # the ranks share the host's cores
    else:
        torch.cuda.set_device(rank)
    device = make_device(kind)
    dist.init_process_group(
        backend, init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size, timeout=INIT_TIMEOUT
    )
    try:
        rows = []
        element_bytes = DTYPE_BYTES[dtype]
        for op in COLLECTIVES:
            for size_bytes in sizes_bytes:
                chunk = max(1, size_bytes // element_bytes)
                call, inputs, message_bytes = _collective(dist, torch, device, op, chunk, rank, world_size, dtype)

                def refresh(inputs=inputs):
                    for tensor in inputs:
                        tensor.normal_()
                    dist.barrier()

                samples = torch.tensor(
                    device.time_s(call, refresh, warmup, repeats), dtype=torch.float64, device=device.torch_device
                )
                dist.all_reduce(samples, op=dist.ReduceOp.MAX)
                rows.append({"op": op, "bytes": message_bytes, "stats": sample_statistics(samples.cpu().numpy())})
        if rank == 0:
            Path(results_path).write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads()}), encoding="utf-8")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _collective(dist, torch, device: Device, op: str, chunk: int, rank: int, world_size: int, dtype: str):
    """The call to time, its input tensors and the bytes of one message to a peer."""
    options = {"dtype": torch_dtype(dtype), "device": device.torch_device}
    element_bytes = DTYPE_BYTES[dtype]
    if op == "all_to_all":
        source, target = torch.randn(world_size * chunk, **options), torch.empty(world_size * chunk, **options)
        return (lambda: dist.all_to_all_single(target, source)), (source,), chunk * element_bytes
    if op == "all_to_all_v":
        sends = [chunk if peer == rank else 2 * chunk for peer in range(world_size)]
        receives = [chunk if peer == rank else 2 * chunk for peer in range(world_size)]
        source, target = torch.randn(sum(sends), **options), torch.empty(sum(receives), **options)
        return (
            (lambda: dist.all_to_all_single(target, source, output_split_sizes=receives, input_split_sizes=sends)),
            (source,),
            2 * chunk * element_bytes,
        )
    if op == "all_gather":
        source, target = torch.randn(chunk, **options), torch.empty(world_size * chunk, **options)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the newer name, where torch has it
        return (lambda: gather(target, source)), (source,), chunk * element_bytes
    raise CalibrationError(f"unknown collective {op!r} (known: {', '.join(COLLECTIVES)})")
