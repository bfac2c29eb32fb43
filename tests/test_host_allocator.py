"""The measuring process's host allocator: ``caching`` keeps freed memory, so a block freed and
allocated again costs no page faults, and what was set is what the metadata says."""

import resource

import numpy as np
import pytest

from secmoe_sim.calibrate.host_allocator import _glibc_mallopt, host_allocator, set_host_allocator

BLOCK_BYTES = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB): unmapped on free by default
PAGE_BYTES = 4096


def _faults_of_a_fresh_block() -> int:
    """Minor page faults of allocating and writing a ``BLOCK_BYTES`` array after one was freed."""
    np.ones(BLOCK_BYTES // 8).sum()  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(BLOCK_BYTES // 8).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_glibc_mallopt() is None, reason="caching needs glibc's mallopt")
def test_caching_keeps_a_freed_block_so_allocating_it_again_faults_no_pages():
    assert set_host_allocator("caching").startswith("caching") and host_allocator().startswith("caching")
    _faults_of_a_fresh_block()  # the heap grows to hold the block once
    # glibc's defaults unmap the block and fault it in again: 16,384 pages, or hundreds with transparent huge pages
    assert _faults_of_a_fresh_block() < 0.01 * BLOCK_BYTES / PAGE_BYTES


def test_system_changes_nothing_and_an_unknown_allocator_is_refused():
    assert set_host_allocator("system") == host_allocator()
    with pytest.raises(ValueError, match="caching, system"):
        set_host_allocator("jemalloc")
