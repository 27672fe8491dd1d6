"""Direct opens: a large file hubfs does not hold yet is opened with FOPEN_DIRECT_IO (Linux >= 6.6,
FUSE_DIRECT_IO_ALLOW_MMAP), so a cold read is copied once, from the daemon's buffers into the
reader's, and leaves nothing in the kernel's page cache. What users see: the same bytes through
read, pread and mmap; the page cache of the file stays empty after a read (and fills without the
option); a second process reading the same file at once reads it through the page cache; a file
all in the cache is opened through the page cache again."""
import ctypes
import hashlib
import mmap
import os
import subprocess
import sys
import time

import pytest

from harness import Mount, sha256_file

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


def test_second_process_reads_through_the_page_cache(emu, fixture, tmp_path):
    """One process holds the file open direct; another process's open of it goes through the page
    cache (processes reading the same shard share one copy), and both read the right bytes."""
    meta = meta_of(fixture)
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=DIRECT) as m:
        path = m.path(*MODEL.split("/"), NAME)
        with open(path, "rb") as held, open(path, "rb") as again:
            # A second open by the same process (threads with their own fd) is direct too.
            assert held.read(8) == fixture.read(meta)[:8]
            assert stat_value(m, "fuse.open.direct") == 2
            other = subprocess.run([sys.executable, "-c", "import hashlib,sys;"
                                    "print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())", path],
                                   capture_output=True, text=True, timeout=60)
            assert other.returncode == 0, other.stderr
            assert other.stdout.strip() == meta["sha256"]
            assert stat_value(m, "fuse.open.direct") == 2  # the other process's open was not direct
            assert cached_pages(path) * 4096 >= meta["size"] // 2
            assert held.read() == fixture.read(meta)[8:]  # the direct handles read on
            assert hashlib.sha256(again.read()).hexdigest() == meta["sha256"]


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
