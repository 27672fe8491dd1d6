"""tools/bench/loaders.py, the benchmark's access patterns, on a local file: each reports the bytes
its pattern reads (the benchmark divides them by its time and checks them against the mount's), and
a reader that fails fails the pattern instead of being timed as done."""
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOADERS = os.path.join(ROOT, "tools", "bench", "loaders.py")
MODEL = "hubfs-test/tiny-model"
NAME = "model.safetensors"  # 21 MB


def loader(*args, ok=True):
    p = subprocess.run([sys.executable, LOADERS] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=120)
    if not ok:
        return p
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


@pytest.fixture
def shard(fixture):
    meta = fixture.files(MODEL)[NAME]
    return fixture.object_path(meta["sha256"]), meta["size"]


def data_bytes(h):
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items() if k != "__metadata__")


def test_whole_file_patterns_read_the_file_once(shard):
    path, size = shard
    for args in (["threads", path, "--threads", 16, "--chunk-mib", 2],
                 ["odirect", path, "--threads", 16, "--chunk-mib", 2],
                 ["odirect", path, "--threads", 7, "--chunk-mib", 0.25],  # parts not a multiple of the chunk
                 ["shared-fd", path, "--workers", 4, "--chunk-mib", 1],
                 ["shared-fd", path, "--workers", 3, "--chunk-mib", 0.75]):
        r = loader(*args)
        assert r["bytes"] == size, args
        assert r["complete"] and r["seconds"] > 0


def test_ranks_read_their_rows_and_the_replicated_tensors(shard):
    path, size = shard
    n, h = header(path)
    ranks = 4
    split = replicated = 0
    for k, v in h.items():
        if k == "__metadata__":
            continue
        b = v["data_offsets"][1] - v["data_offsets"][0]
        if len(v["shape"]) >= 2 and v["shape"][0] >= ranks:
            split += b  # the ranks' rows add up to the tensor once
        else:
            replicated += b  # every rank reads all of it
    assert split and replicated  # the fixture has both kinds: the count below tells them apart
    r = loader("ranks", path, "--ranks", ranks)
    assert r["bytes"] == ranks * (8 + n) + split + ranks * replicated
    # The offsets taken from another copy of the header give the same plan.
    assert loader("ranks", path, "--ranks", ranks, "--header-from", path)["bytes"] == r["bytes"]


def test_prefetch_then_mmap_reads_the_file_then_every_tensor(shard):
    path, size = shard
    n, h = header(path)
    r = loader("prefetch-mmap", path, "--threads", 8, "--chunk-mib", 1)
    assert r["prefetch_bytes"] == size
    assert r["bytes"] == 8 + n + data_bytes(h)
    assert r["tensors"] == len([k for k in h if k != "__metadata__"])
    assert 0 < r["prefetch_seconds"] <= r["seconds"]


def test_a_reader_that_fails_fails_the_pattern(shard, tmp_path):
    path, size = shard
    short = tmp_path / "short.safetensors"
    with open(path, "rb") as src, open(short, "wb") as dst:
        dst.write(src.read(size // 2))  # the header is whole, the later tensors are cut off
    p = loader("ranks", short, "--ranks", 4, ok=False)
    assert p.returncode != 0 and "short read" in p.stderr, (p.returncode, p.stderr)
    assert not p.stdout.strip()  # no timing printed for a pattern that did not finish
    p = loader("prefetch-mmap", short, "--threads", 4, "--chunk-mib", 1, ok=False)
    assert p.returncode != 0, p.stdout
    missing = tmp_path / "missing"
    for args in (["shared-fd", missing], ["odirect", missing], ["ranks", missing]):
        p = loader(*args, ok=False)
        assert p.returncode != 0 and "No such file" in p.stderr, (args, p.stderr)
