"""Two more loader patterns from the design notes, each cold on a fresh mount: the bytes every reader
gets are the file's, and the origin sends the file about once (<= 1.05 x its size) however many
readers share it.
- Tensor-parallel ranks: N processes started together, each opening the checkpoint and reading
  its own slice (its rows) of every tensor, in key order, by pread or through mmap.
- vLLM's prefetch: 8 threads read the whole file in large reads to warm the cache, then the loader
  maps the file and copies every tensor out in key order."""
import json
import mmap
import os
import struct
import subprocess
import sys
import threading

import pytest

from harness import Mount, cdn_bytes

MODEL = "hubfs-test/tiny-model"
NAME = "model.safetensors"  # 21 MB, the largest file of the test fixture

# One rank of a tensor-parallel load: its rows of every tensor, key order; prints their SHA-256.
# Run as its own process on the mount, and by the test on the fixture's local copy for the answer.
RANK = r"""
import hashlib, json, mmap, os, struct, sys
path, rank, ranks, how = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_RDONLY)
n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
header = json.loads(os.pread(fd, n, 8))
base = 8 + n
mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if how == "mmap" else None
h = hashlib.sha256()
for name in sorted(k for k in header if k != "__metadata__"):
    begin, end = header[name]["data_offsets"]
    shape = header[name]["shape"]
    rows = shape[0] if shape else 1
    row = (end - begin) // rows
    lo, hi = base + begin + rank * rows // ranks * row, base + begin + (rank + 1) * rows // ranks * row
    h.update(mm[lo:hi] if mm is not None else os.pread(fd, hi - lo, lo))
print(h.hexdigest())
"""


def run_ranks(path, ranks, how, timeout=60):
    """Starts every rank at once; their printed digests, in rank order."""
    procs = [subprocess.Popen([sys.executable, "-c", RANK, path, str(r), str(ranks), how],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(ranks)]
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            assert p.returncode == 0, stderr
            out.append(stdout.strip())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def assert_open_mode(m, mode):
    direct = int(float(m.stats().get("fuse.open.direct", 0)))
    assert direct >= 1 if mode == "direct" else direct == 0, direct


# Defaults (the file is below --direct-min-mib: page-cache opens), and direct opens with 1 MiB
# blocks and a small memory cache (ranks opening together read direct, from the daemon's memory).
MODES = {"defaults": [], "direct": ["--direct-min-mib", "1", "--block-size-mib", "1", "--memory-cache", "16M"]}


@pytest.mark.parametrize("how", ["pread", "mmap"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_tensor_parallel_ranks_read_their_slices(emu, fixture, tmp_path, mode, how):
    meta = fixture.files(MODEL)[NAME]
    ranks = 4
    want = run_ranks(fixture.object_path(meta["sha256"]), ranks, how)
    assert len(set(want)) == ranks  # each rank's slices differ: the check below tells ranks apart
    before = cdn_bytes(emu, meta["sha256"])
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=MODES[mode]) as m:
        assert run_ranks(m.path(*MODEL.split("/"), NAME), ranks, how) == want
        assert_open_mode(m, mode)
    assert cdn_bytes(emu, meta["sha256"]) - before <= meta["size"] * 1.05


@pytest.mark.parametrize("mode", sorted(MODES))
def test_prefetch_threads_then_mmap_load(emu, fixture, tmp_path, mode):
    meta = fixture.files(MODEL)[NAME]
    want = fixture.read(meta)
    threads, chunk = 8, 2 << 20  # vLLM: 8 threads x 16 MiB reads, scaled to a 21 MB file
    before = cdn_bytes(emu, meta["sha256"])
    with Mount(emu.hub_url, cache_dir=str(tmp_path / "cache"), extra_args=MODES[mode]) as m:
        path = m.path(*MODEL.split("/"), NAME)
        got = [0] * threads
        errors = []

        def prefetch(t):
            try:
                with open(path, "rb", buffering=0) as f:
                    for off in range(t * chunk, len(want), threads * chunk):
                        b = os.pread(f.fileno(), chunk, off)
                        if b != want[off:off + chunk]:
                            errors.append((t, off))
                        got[t] += len(b)
            except OSError as e:
                errors.append((t, e))

        workers = [threading.Thread(target=prefetch, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
            assert not w.is_alive(), "a prefetch thread did not finish in 60 s"
        assert not errors
        assert sum(got) == len(want)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            n = struct.unpack("<Q", mm[:8])[0]
            header = json.loads(mm[8:8 + n])
            names = sorted(k for k in header if k != "__metadata__")
            assert len(names) > 10
            for name in names:
                begin, end = (8 + n + o for o in header[name]["data_offsets"])
                assert mm[begin:end] == want[begin:end], name
        assert_open_mode(m, mode)
    assert cdn_bytes(emu, meta["sha256"]) - before <= meta["size"] * 1.05
