"""FUSE passthrough: a file whose every block is cached is verified, kept whole in the cache
directory, and later opens let the kernel read that local copy directly (Linux >= 6.9, root).
What users see: the same bytes through read and mmap, no READ reaching the daemon, an open never
failing because another handle of the same file reads through the page cache, and the whole file
surviving a remount."""
import contextlib
import mmap
import os
import subprocess
import time

import pytest

from harness import HUBFS_BIN, Mount, cdn_bytes, eventually, kernel_offers_passthrough, sha256_file

MODEL = "hubfs-test/tiny-model"
NAME = "model.safetensors"  # 21 MB: several blocks, above the 1 MiB floor for whole files


pytestmark = pytest.mark.skipif(not kernel_offers_passthrough(), reason="needs root and Linux >= 6.9")


def stat_value(m, key):
    return int(float(m.stats().get(key, 0)))


def whole_files(cache):
    d = os.path.join(cache, "v2", "files")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def blocks_of(cache, sha):
    out = []
    for d, _, names in os.walk(os.path.join(cache, "v2", "blocks")):
        out += [n for n in names if n.startswith(sha)]
    return out


def wait_whole(cache, sha, timeout=60):
    return eventually(lambda: any(n.startswith(sha) for n in whole_files(cache)), timeout)


def fill_whole(emu, meta, cache):
    """A mount reads the file once and stays until the daemon has kept it whole."""
    with Mount(emu.hub_url, cache_dir=cache) as m:
        assert sha256_file(m.path(*MODEL.split("/"), NAME)) == meta["sha256"]
        assert wait_whole(cache, meta["sha256"]), m.read_log()


def read_uncached(path):
    """sha256 of the file read with its FUSE page cache dropped first (so a read the kernel does
    not pass through would reach the daemon)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return sha256_file(path)


def mmap_sha(path):
    import hashlib
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return hashlib.sha256(mm).hexdigest()


def test_cached_file_is_read_by_the_kernel(emu, fixture, tmp_path):
    meta = fixture.files(MODEL)[NAME]
    cache = str(tmp_path / "cache")
    with Mount(emu.hub_url, cache_dir=cache) as m:
        path = m.path(*MODEL.split("/"), NAME)
        assert sha256_file(path) == meta["sha256"]
        assert wait_whole(cache, meta["sha256"]), m.read_log()
        # The whole file replaced its blocks: the daemon renames it into place, then removes them.
        assert eventually(lambda: blocks_of(cache, meta["sha256"]) == [], 10), blocks_of(cache, meta["sha256"])
        reads, opens = stat_value(m, "fs.read_bytes"), stat_value(m, "fuse.open.passthrough")
        assert read_uncached(path) == meta["sha256"]
        assert mmap_sha(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.passthrough") >= opens + 2
        assert stat_value(m, "fs.read_bytes") == reads  # not one byte was read through the daemon
    r = subprocess.run([HUBFS_BIN, "cache", "verify", "--cache-dir", cache], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_whole_file_survives_remount_without_origin_traffic(emu, fixture, tmp_path):
    meta = fixture.files(MODEL)[NAME]
    cache = str(tmp_path / "cache")
    fill_whole(emu, meta, cache)
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache) as m:
        path = m.path(*MODEL.split("/"), NAME)
        assert read_uncached(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.passthrough") >= 1
        assert stat_value(m, "fs.read_bytes") == 0
    assert cdn_bytes(emu, meta["sha256"]) == 0


def test_open_beside_a_page_cache_handle_is_never_refused(emu, fixture, tmp_path):
    # The kernel fails (EIO) a passthrough open of an inode with files open through the page
    # cache: while one is open, new opens must stay page-cache opens; once all are closed, a new
    # open is a passthrough one.
    meta = fixture.files(MODEL)[NAME]
    cache = str(tmp_path / "cache")
    with Mount(emu.hub_url, cache_dir=cache) as m:
        path = m.path(*MODEL.split("/"), NAME)
        with open(path, "rb") as held:
            import hashlib
            assert hashlib.sha256(held.read()).hexdigest() == meta["sha256"]
            assert wait_whole(cache, meta["sha256"])
            opens = stat_value(m, "fuse.open.passthrough")
            assert read_uncached(path) == meta["sha256"]
            held.seek(0)
            assert hashlib.sha256(held.read()).hexdigest() == meta["sha256"]
            assert stat_value(m, "fuse.open.passthrough") == opens
        # RELEASE is sent after close() returns: until the daemon has it, an open stays a page-cache one
        assert eventually(lambda: os.close(os.open(path, os.O_RDONLY)) or stat_value(m, "fuse.open.passthrough") > opens, 30)
        opens = stat_value(m, "fuse.open.passthrough")
        reads = stat_value(m, "fs.read_bytes")
        assert read_uncached(path) == meta["sha256"]
        assert stat_value(m, "fuse.open.passthrough") > opens
        assert stat_value(m, "fs.read_bytes") == reads


def test_corrupt_whole_file_is_found_by_cache_verify(emu, fixture, tmp_path):
    meta = fixture.files(MODEL)[NAME]
    cache = str(tmp_path / "cache")
    fill_whole(emu, meta, cache)
    victim = os.path.join(cache, "v2", "files", [n for n in whole_files(cache) if n.startswith(meta["sha256"])][0])
    with open(victim, "r+b") as f:
        f.seek(meta["size"] // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    r = subprocess.run([HUBFS_BIN, "cache", "verify", "--cache-dir", cache], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "1 bad" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([HUBFS_BIN, "cache", "verify", "--remove-bad", "--cache-dir", cache],
                       capture_output=True, text=True, timeout=120)
    assert not os.path.exists(victim)
    with Mount(emu.hub_url, cache_dir=cache) as m:
        assert sha256_file(m.path(*MODEL.split("/"), NAME)) == meta["sha256"]


def test_no_passthrough_keeps_blocks(emu, fixture, tmp_path):
    meta = fixture.files(MODEL)[NAME]
    cache = str(tmp_path / "cache")
    with Mount(emu.hub_url, cache_dir=cache, extra_args=["--no-passthrough"]) as m:
        path = m.path(*MODEL.split("/"), NAME)
        assert sha256_file(path) == meta["sha256"]
        # verification runs after 0.5 s without reads
        assert eventually(lambda: stat_value(m, "cache.verify.ok") >= 1, 30)
        assert whole_files(cache) == []
        reads = stat_value(m, "fs.read_bytes")
        assert read_uncached(path) == meta["sha256"]
        assert stat_value(m, "fs.read_bytes") > reads
        assert stat_value(m, "fuse.open.passthrough") == 0


def drop_backing_cache(cache, sha):
    """Drops the page cache of the whole file kept in the cache (what a reboot leaves)."""
    name = [n for n in whole_files(cache) if n.startswith(sha)][0]
    fd = os.open(os.path.join(cache, "v2", "files", name), os.O_RDONLY)
    try:
        os.fdatasync(fd)  # dirty pages would stay
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# A 32 MiB window: 4 MiB sentinel chunks, so the 21 MB file is 6 of them (the kernel's first read
# of a file, a 2 MiB folio, stays below the first sentinel).
PREFETCH_ARGS = ["--passthrough-prefetch-mib", "32"]


@contextlib.contextmanager
def remounted_whole(emu, meta, tmp_path):
    """A mount over a cache holding the file whole, its page cache dropped (a reboot's state)."""
    cache = str(tmp_path / "cache")
    fill_whole(emu, meta, cache)
    drop_backing_cache(cache, meta["sha256"])
    with Mount(emu.hub_url, cache_dir=cache, extra_args=PREFETCH_ARGS) as m:
        yield m, m.path(*MODEL.split("/"), NAME)


def test_sequential_reader_of_a_passthrough_file_is_read_ahead(emu, fixture, tmp_path):
    import hashlib
    meta = fixture.files(MODEL)[NAME]
    with remounted_whole(emu, meta, tmp_path) as (m, path):
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
                time.sleep(0.02)  # a reader slower than the disk: the prefetch has time to run ahead
        assert h.hexdigest() == meta["sha256"]
        assert stat_value(m, "fuse.open.passthrough") == 1
        assert stat_value(m, "passthrough.prefetch.files") == 1
        ahead = stat_value(m, "passthrough.prefetch.bytes")
        assert 0 < ahead < meta["size"], m.stats()
        assert stat_value(m, "fs.read_bytes") == 0
        time.sleep(0.2)  # RELEASE is sent after close() returns
        # the file is in the page cache now: a second reader is not followed
        assert sha256_file(path) == meta["sha256"]
        assert stat_value(m, "passthrough.prefetch.files") == 1
        assert stat_value(m, "passthrough.prefetch.bytes") == ahead


def test_header_read_of_a_passthrough_file_reads_nothing_ahead(emu, fixture, tmp_path):
    with remounted_whole(emu, fixture.files(MODEL)[NAME], tmp_path) as (m, path):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(n)
            assert header.startswith(b"{") and len(header) == n
            time.sleep(0.3)
            assert stat_value(m, "passthrough.prefetch.files") == 1
            assert stat_value(m, "passthrough.prefetch.bytes") == 0
