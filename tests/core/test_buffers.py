"""Reusable aligned buffers (``BufferPool``) and the backend's pooled bounce buffers."""

from __future__ import annotations

import threading

import pytest

from rig.core.backend import BOUNCE_CHUNK, BlockBackend
from rig.core.buffers import PAGE_SIZE, BufferPool, buffer_address
from rig.core.limits import BlockLimits
from rig.nodes.memory import MemoryNode


def test_pool_hands_out_page_aligned_buffers_of_its_size() -> None:
    pool = BufferPool(64 * 1024)
    buf = pool.get()
    assert buf.nbytes == 64 * 1024 and not buf.readonly
    addr = buffer_address(buf)
    assert addr is not None and addr % PAGE_SIZE == 0


def test_pool_reuses_a_buffer_given_back() -> None:
    pool = BufferPool(4096)
    first = pool.get()
    pool.put(first)
    assert pool.get() is first
    assert pool.allocated == 1


def test_pool_lends_a_slice_and_takes_the_buffer_back_even_on_error() -> None:
    pool = BufferPool(8192)
    with pool.lend(512) as part:
        assert part.nbytes == 512
    with pytest.raises(RuntimeError), pool.lend() as whole:
        assert whole.nbytes == 8192
        raise RuntimeError("boom")
    for _ in range(10):
        with pool.lend(100):
            pass
    assert pool.allocated == 1


def test_pool_keeps_at_most_keep_buffers() -> None:
    pool = BufferPool(4096, keep=2)
    bufs = [pool.get() for _ in range(5)]
    assert pool.allocated == 5
    for b in bufs:
        pool.put(b)
    got = [pool.get() for _ in range(3)]
    assert pool.allocated == 6  # two came back from the pool, one is new
    assert sum(any(g is b for b in bufs) for g in got) == 2


def test_pool_never_hands_one_buffer_to_two_threads() -> None:
    pool = BufferPool(4096, keep=4)
    seen: list[int] = []
    lock = threading.Lock()
    errors: list[str] = []

    def work(n: int) -> None:
        for _ in range(200):
            with pool.lend() as buf:
                buf[0] = n
                with lock:
                    seen.append(id(buf))
                if buf[0] != n:
                    errors.append("shared")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.allocated <= 4 + 4


def test_pool_rejects_a_size_of_zero() -> None:
    with pytest.raises(ValueError):
        BufferPool(0)


def _odd_backend() -> BlockBackend:
    """8 MiB in memory that takes only 4 KiB-aligned requests from 4 KiB-aligned buffers."""
    node = MemoryNode(8 << 20, logical_block_size=4096)
    node.limits = BlockLimits(request_alignment=4096, buffer_alignment=4096,
                              discard_granularity=4096)
    return BlockBackend(node)


def test_backend_bounce_buffers_are_pooled() -> None:
    """Unaligned reads, unaligned-buffer writes and read-modify-writes reuse one bounce buffer
    instead of making one per request, and still read and write the right bytes."""
    with _odd_backend() as blk:
        for i in range(20):
            blk.pwritev(8192, [bytearray([i]) * 4096])    # unaligned buffer: bounce write
            blk.pwrite(512, bytes([i + 1]) * 700)         # unaligned range: read-modify-write
            assert blk.pread(500, 8000) == (              # unaligned range: bounce read
                bytes(12) + bytes([i + 1]) * 700 + bytes(6980) + bytes([i]) * 308)
        assert blk._bounce_pool.allocated == 1
        # a request larger than a pooled buffer gets a buffer of its own
        blk.pwritev(0, [bytearray(b"\x07") * (BOUNCE_CHUNK + 4096)])
        assert blk.pread(BOUNCE_CHUNK, 4096) == b"\x07" * 4096
        assert blk._bounce_pool.allocated == 1
