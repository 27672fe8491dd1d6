"""Direct opens: a large file hubfs does not hold yet is opened with FOPEN_DIRECT_IO (Linux >= 6.6,
FUSE_DIRECT_IO_ALLOW_MMAP), so a cold read is copied once, from the daemon's buffers into the
reader's, and leaves nothing in the kernel's page cache. What users see: the same bytes through
read, pread and mmap; the page cache of the file stays empty after a read (and fills without the
option); processes reading the same file together all read it direct, one opening it later reads
it through the page cache; a file all in the cache is opened through the page cache again."""
import ctypes
import hashlib
import mmap
import os
import subprocess
import sys
import threading
import time

import pytest

from harness import Mount, cdn_bytes, sha256_file

MODEL = "hubfs-test/tiny-model"
NAME = "model.safetensors"  # 21 MB
DIRECT = ["--direct-min-mib", "1", "--no-passthrough"]  # the test file qualifies; no whole files


def kernel_at_least(major, minor):
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (major, minor)
    except ValueError:
        return False


pytestmark = pytest.mark.skipif(not kernel_at_least(6, 6), reason="needs Linux >= 6.6 (FUSE_DIRECT_IO_ALLOW_MMAP)")


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def cached_pages(path):
    """Pages of the file in the page cache (cachestat(2), Linux >= 6.5)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = os.open(path, os.O_RDONLY)
    try:
        r, st = _Range(0, 0), _Stat()
        if libc.syscall(451, fd, ctypes.byref(r), ctypes.byref(st), 0) != 0:
            pytest.skip("cachestat: %s" % os.strerror(ctypes.get_errno()))
        return st.cache
    finally:
        os.close(fd)


def stat_value(m, key):
    return int(float(m.stats().get(key, 0)))


def meta_of(fixture):
    return fixture.files(MODEL)[NAME]


def test_cold_read_is_direct_and_leaves_no_page_cache(emu, fixture, tmp_path):
    meta = meta_of(fixture)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=DIRECT) as m:
        path = m.path(*MODEL.split("/"), NAME)
        assert sha256_file(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.direct") == 1, m.read_log()
        assert cached_pages(path) == 0
        # Unaligned preads across block boundaries, straight into the caller's buffer.
        want = fixture.read(meta)
        fd = os.open(path, os.O_RDONLY)
        try:
            for off, n in ((0, 8), (4 * 2**20 - 3, 7), (5 * 2**20 + 1, 3 * 2**20 + 5), (len(want) - 10, 100)):
                assert os.pread(fd, n, off) == want[off:off + n]
        finally:
            os.close(fd)


def test_without_it_the_read_fills_the_page_cache(emu, fixture, tmp_path):
    """The same read with --direct-min-mib 0: the check above can fail."""
    meta = meta_of(fixture)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"),
               extra_args=["--direct-min-mib", "0", "--no-passthrough"]) as m:
        path = m.path(*MODEL.split("/"), NAME)
        assert sha256_file(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.direct") == 0
        assert cached_pages(path) * 4096 >= meta["size"] // 2


def test_mmap_of_a_direct_file(emu, fixture, tmp_path):
    meta = meta_of(fixture)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=DIRECT) as m:
        path = m.path(*MODEL.split("/"), NAME)
        with open(path, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:  # MAP_SHARED
                assert hashlib.sha256(mm).hexdigest() == meta["sha256"]
            # Reads on the same direct handle after the mapping still return the right bytes.
            f.seek(0)
            assert hashlib.sha256(f.read()).hexdigest() == meta["sha256"]
        assert stat_value(m, "fuse.open.direct") == 1, m.read_log()


def sha256_in_another_process(path):
    other = subprocess.run([sys.executable, "-c", "import hashlib,sys;"
                            "print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())", path],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    return other.stdout.strip()


def test_processes_reading_a_file_together_all_read_it_direct(emu, fixture, tmp_path):
    """Ranks started together: another process opening the file while its first reader is still
    near the start reads it direct too, from the daemon's memory (nothing lands in the page cache),
    and the origin serves the file once for all of them."""
    meta = meta_of(fixture)
    before = cdn_bytes(emu, meta["sha256"])
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=DIRECT) as m:
        path = m.path(*MODEL.split("/"), NAME)
        with open(path, "rb") as held, open(path, "rb") as again:
            # A second open by the same process (threads with their own fd) is direct too.
            assert held.read(8) == fixture.read(meta)[:8]
            assert stat_value(m, "fuse.open.direct") == 2
            assert sha256_in_another_process(path) == meta["sha256"]
            assert stat_value(m, "fuse.open.direct") == 3, m.read_log()  # the other process's open
            assert cached_pages(path) == 0
            assert held.read() == fixture.read(meta)[8:]  # the direct handles read on
            assert hashlib.sha256(again.read()).hexdigest() == meta["sha256"]
    assert cdn_bytes(emu, meta["sha256"]) - before <= meta["size"] * 1.05


def test_a_process_opening_later_reads_through_the_page_cache(emu, fixture, tmp_path):
    """One process has read the file past what the daemon keeps of blocks it returned (an eighth of
    the memory cache: 2 MiB here); another process's open of it then goes through the page cache,
    where it does not depend on blocks the daemon let go of, and both read the right bytes."""
    meta = meta_of(fixture)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"),
               extra_args=DIRECT + ["--memory-cache", "16M"]) as m:
        path = m.path(*MODEL.split("/"), NAME)
        with open(path, "rb", buffering=0) as held:
            assert held.read(4 << 20) == fixture.read(meta)[:4 << 20]
            assert stat_value(m, "fuse.open.direct") == 1
            assert sha256_in_another_process(path) == meta["sha256"]
            assert stat_value(m, "fuse.open.direct") == 1  # the other process's open was not direct
            assert cached_pages(path) * 4096 >= meta["size"] // 2
            assert held.read() == fixture.read(meta)[4 << 20:]  # the direct handle reads on


def test_a_file_all_in_the_cache_is_opened_through_the_page_cache(emu, fixture, tmp_path):
    meta = meta_of(fixture)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=DIRECT) as m:
        path = m.path(*MODEL.split("/"), NAME)
        assert sha256_file(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.direct") == 1
        deadline = time.monotonic() + 30
        while stat_value(m, "cache.disk.bytes") < meta["size"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sha256_file(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.direct") == 1  # the re-read's open was not direct
        assert cached_pages(path) * 4096 >= meta["size"] // 2


def test_readers_across_block_boundaries_under_a_small_memory_cache(emu, fixture, tmp_path):
    """16 threads, each with its own fd, read their sixteenth of the file in 768 KiB preads that
    start off the block boundaries, under a memory cache far smaller than what they hold at once
    (1 MiB blocks, --memory-cache 4M: all block buffers together within 6 MiB). A READ across a
    boundary holds the block before it while it gets the next; readers must not all end up holding
    one block each and waiting for room for the next one, which none lets go (each then waited out
    its bounded wait: cache.buffers.budget_exceeded). The bytes are right, no reader waited it out,
    and the readers copied out the part before the boundary instead (fs.read.boundary_copies)."""
    meta = meta_of(fixture)
    want = fixture.read(meta)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"),
               extra_args=DIRECT + ["--memory-cache", "4M", "--block-size-mib", "1"]) as m:
        path = m.path(*MODEL.split("/"), NAME)
        n = 16
        chunk = len(want) // n
        start = threading.Barrier(n)
        errors = []

        def reader(i):
            fd = os.open(path, os.O_RDONLY)
            try:
                start.wait(timeout=30)
                off, end = i * chunk + 4097, (i + 1) * chunk if i < n - 1 else len(want)
                while off < end:
                    k = min(768 << 10, end - off)
                    got = os.pread(fd, k, off)
                    if got != want[off:off + k]:
                        errors.append("reader %d: wrong bytes at %d" % (i, off))
                        return
                    off += k
            except Exception as e:  # noqa: BLE001 - reported below with the reader's number
                errors.append("reader %d: %r" % (i, e))
            finally:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a reader hung"
        assert errors == []
        assert stat_value(m, "fuse.open.direct") == n, m.read_log()
        assert stat_value(m, "cache.buffers.budget_exceeded") == 0, m.stats()
        assert stat_value(m, "fs.read.boundary_copies") > 0, m.stats()
