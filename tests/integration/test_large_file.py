"""A shard larger than 4 GiB, as real checkpoints have (5-10 GB shards): its size, its tensors' offsets
past 2^31 and 2^32, reads that cross those offsets and its end, by pread and mmap, cold and again
from the disk tier after a remount. Every test file elsewhere is under 2^31 bytes, where an offset
or size kept in 32 bits anywhere (the tree listing, the safetensors plan, block indexes, Range
headers, the disk tier's block files) would go unseen.

The object is a sparse file: zeros but for random bytes around the offsets the test reads, so it
costs no disk, and its SHA-256 (computed while it is written) about 2 s."""
import hashlib
import json
import mmap
import os
import shutil
import random
import struct
import tempfile

import pytest

from harness import Fixture, Mount, cdn_bytes  # (harness puts tools/hubemu on the path)

import gen_fixture
from hubemu import Emulator

RID = "hubfs-test/huge-model"
NAME = "model-00001-of-00001.safetensors"
G2, G4 = 1 << 31, 1 << 32
TENSORS = [  # name, dtype, shape, bytes: data offsets run past 2^31 and 2^32, the end is off any block
    ("lm_head.weight", "BF16", [131072, 8192], G2),
    ("model.embed_tokens.weight", "BF16", [131072, 8192], G2),
    ("model.layers.0.self_attn.q_proj.weight", "F32", [4096, 8191], 4096 * 8191 * 4),
    ("model.norm.weight", "F32", [8191], 8191 * 4),
]


def hash_zeros(h, n, zeros=bytes(8 << 20)):
    while n > 0:
        h.update(zeros if n >= len(zeros) else zeros[:n])
        n -= len(zeros)


def make_huge_safetensors(path, rng_seed=7):
    """Writes the sparse shard; returns (sha256, size, data start, {tensor: (begin, end)} absolute)."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, n in TENSORS:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    base = 8 + len(raw)
    size = base + off
    rng = random.Random(rng_seed)
    patches = {at: rng.randbytes(min(2 << 20, size - at))
               for at in (base, G2 - (1 << 20), G4 - (1 << 20), size - (3 << 20))}
    h, pos = hashlib.sha256(), base
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(size)
        h.update(struct.pack("<Q", len(raw)) + raw)
        for at, data in sorted(patches.items()):
            f.seek(at)
            f.write(data)
            hash_zeros(h, at - pos)  # the hole before it, hashed without reading it
            h.update(data)
            pos = at + len(data)
    hash_zeros(h, size - pos)
    spans = {name: (base + header[name]["data_offsets"][0], base + header[name]["data_offsets"][1])
             for name, *_ in TENSORS}
    return h.hexdigest(), size, base, spans


@pytest.fixture(scope="module")
def huge():
    d = tempfile.mkdtemp(prefix="hubfs-huge-")
    try:
        fx = gen_fixture.Fixture(os.path.join(d, "fx"), "test")
        tmp = os.path.join(fx.tmp, "huge.safetensors")
        sha, size, base, spans = make_huge_safetensors(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(fx.objects, sha))
        fx.repo("model", RID).commit({NAME: {"sha256": sha, "size": size},
                                      "config.json": b'{"model_type": "llama"}\n'}, "Upload a huge shard")
        fx.write()
        with Emulator(fx.out) as emu:
            yield emu, Fixture(fx.out), sha, size, spans
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ranges(size, spans):
    """(offset, length) pairs a loader reads: each tensor's first and last 64 KiB in key order, then
    reads across 2^31, 2^32 (and a block boundary there) and the end of the file."""
    out = []
    for name in sorted(spans):
        b, e = spans[name]
        out += [(b, min(64 << 10, e - b)), (max(b, e - (64 << 10)), min(64 << 10, e - b))]
    out += [(G2 - 4097, 1 << 20), (G4 - (512 << 10) - 3, 1 << 20), (G4, 4096), (size - (1 << 20) - 5, 1 << 20)]
    return out


def check_reads(path, local, size, spans):
    with open(local, "rb") as want, open(path, "rb", buffering=0) as f:
        for off, n in ranges(size, spans):
            assert os.pread(f.fileno(), n, off) == os.pread(want.fileno(), n, off), (off, n)
        assert os.pread(f.fileno(), 1 << 20, size - 100) == os.pread(want.fileno(), 100, size - 100)  # short at EOF
        assert os.pread(f.fileno(), 4096, size) == b""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            assert len(mm) == size
            for off in (G4 - 10, size - 4096):
                assert mm[off:off + 4096] == os.pread(want.fileno(), 4096, off), off


def test_a_shard_over_4_gib_reads_right_cold_and_after_remount(huge, tmp_path):
    emu, fixture, sha, size, spans = huge
    assert size > G4 + (100 << 20)
    local = fixture.object_path(sha)
    cache = str(tmp_path / "cache")
    with Mount(emu.hub_url, cache_dir=cache) as m:
        path = m.path(*RID.split("/"), NAME)
        assert os.stat(path).st_size == size
        assert sorted(os.listdir(m.path(*RID.split("/")))) == sorted([NAME, "config.json"])
        with open(path, "rb") as f:  # the header, as a loader reads it
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        for name, dtype, shape, nbytes in TENSORS:
            assert header[name]["dtype"] == dtype and header[name]["shape"] == shape
        check_reads(path, local, size, spans)
    cold = cdn_bytes(emu, sha)
    assert 0 < cold < size // 4  # ranges, never the whole file
    with Mount(emu.hub_url, cache_dir=cache) as m:
        check_reads(m.path(*RID.split("/"), NAME), local, size, spans)
    assert cdn_bytes(emu, sha) == cold  # the same reads again: all from the disk tier
