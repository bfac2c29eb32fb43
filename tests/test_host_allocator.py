"""The measuring process's host allocator: ``caching`` keeps freed memory, so a block freed and
allocated again costs no page faults; ``system`` leaves glibc's defaults, which unmap it and fault it
in again; and what was set is what the description (the metadata's ``host_allocator``) says. Each
case runs in a fresh interpreter, since the setting is process-wide."""

import json
import resource
import subprocess
import sys

import pytest

from secmoe_sim.calibrate.host_allocator import _glibc_mallopt, allocator_kind, set_host_allocator
from secmoe_sim.spec.units import BINARY_PREFIXES

BLOCK_BYTES = int(64 * BINARY_PREFIXES["Mi"])  # above glibc's largest mmap threshold (32 MiB): unmapped on free by default
HUGE_PAGE_BYTES = 2 * BINARY_PREFIXES["Mi"]  # the largest page a fault can bring in here (x86-64 transparent huge pages)
KEPT_FAULTS = 0.01 * BLOCK_BYTES / resource.getpagesize()  # a kept block: under 1% of its pages faulted again

_CHILD = """
import json, resource, sys
import numpy as np
from secmoe_sim.calibrate.host_allocator import set_host_allocator

described = [set_host_allocator(kind) for kind in sys.argv[2:]]
block = int(sys.argv[1])
np.ones(block, dtype=np.uint8).sum()  # allocated, touched, freed: the heap grows to hold it once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(block, dtype=np.uint8).sum()
print(json.dumps({"described": described, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _fresh_process(*kinds: str) -> dict:
    """In a new interpreter: each of ``kinds`` set in turn, then the page faults of allocating and writing a
    ``BLOCK_BYTES`` block after one was freed."""
    found = subprocess.run([sys.executable, "-c", _CHILD, str(BLOCK_BYTES), *kinds], check=True, capture_output=True, text=True)
    return json.loads(found.stdout)


@pytest.mark.skipif(_glibc_mallopt() is None, reason="caching needs glibc's mallopt")
def test_caching_keeps_a_freed_block_and_system_lets_it_go_back_to_the_os():
    caching, system = _fresh_process("caching"), _fresh_process("system")
    assert allocator_kind(caching["described"][0]) == "caching" and caching["faults"] < KEPT_FAULTS
    assert system["described"] == ["system (the C library's defaults)"]
    assert system["faults"] >= BLOCK_BYTES / HUGE_PAGE_BYTES  # every page again, huge pages at best


@pytest.mark.skipif(_glibc_mallopt() is None, reason="caching needs glibc's mallopt")
def test_system_after_caching_changes_nothing_and_says_so():
    after = _fresh_process("caching", "system")
    assert [allocator_kind(d) for d in after["described"]] == ["caching", "caching"]
    assert after["faults"] < KEPT_FAULTS


def test_an_unknown_allocator_is_refused():
    with pytest.raises(ValueError, match="caching, system"):
        set_host_allocator("jemalloc")
