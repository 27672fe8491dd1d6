#!/usr/bin/python3
"""Records the FUSE READs each loader pattern of the benchmark makes, for the readahead policy's
unit tests (tests/unit/fs/readahead_trace_test.cc replays them).

    sudo /usr/bin/python3 tools/bench/record_traces.py [--out tests/unit/fs/traces] [--shard-mb 256]

Each pattern of tools/bench/loaders.py (and `dd`, and 8 `dd` processes) reads the first shard of
the benchmark's fixture through the stub FUSE filesystem, mounted as hubfs mounts (1 MiB READs,
read_ahead_kb raised) with the file opened as hubfs opens a cold shard (direct, mmap allowed),
after the page cache is dropped. The stub writes every READ it is sent ("HANDLE OFFSET SIZE", in
the order its threads take them); this script keeps them as OUT/<pattern>.trace under a comment
header (which gives the file's size), and the shard's safetensors header, byte for byte, as
OUT/shard.header.json, which the tests build the tensor plan from. Needs root (drop_caches, read_ahead_kb) and a release build.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# The patterns, as the benchmark runs them (Bench.patterns, Bench.more_patterns, eight_readers).
WHAT = {
    "seq": "dd if=SHARD of=/dev/null bs=1M",
    "eight": "8 dd processes at once, each the whole shard",
    "st": "safetensors eager load: 8 bytes, the header, every tensor by pread in key order",
    "mmap": "safe_open-style: the header, numpy.memmap, every tensor copied out in key order",
    "threads": "16 threads x own fd, a contiguous 1/16 each in 2 MiB reads",
    "odirect": "the same with O_DIRECT opens (fastsafetensors)",
    "ranks": "4 tensor-parallel ranks: each its rows of every tensor, pread in key order",
    "shared": "4 forked workers on one fd, interleaved 1 MiB preads",
    "prefetch": "vLLM prefetch: 8 threads x 16 MiB in file order, then the mmap load",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "unit", "fs", "traces"))
    ap.add_argument("--shard-mb", type=int, default=256)
    ap.add_argument("--only", default="", help="comma list of patterns (default all)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("record_traces.py needs root (drop_caches, read_ahead_kb)")
    if not os.access(bench.STUB, os.X_OK):
        raise SystemExit("%s is missing: run tools/build release" % bench.STUB)

    b = bench.Bench(argparse.Namespace(shard_mb=a.shard_mb))
    b.fixture()
    local = b.local[0]
    size = b.size[0]
    os.makedirs(a.out, exist_ok=True)
    with open(local, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        raw_header = f.read(n)
    json.loads(raw_header)  # the shard's own header, kept byte for byte (its length places the tensors)
    with open(os.path.join(a.out, "shard.header.json"), "wb") as f:
        f.write(raw_header)
    work = tempfile.mkdtemp(prefix="hubfs-traces-", dir="/var/tmp")
    names = a.only.split(",") if a.only else list(WHAT)
    mp = os.path.join(work, "mnt")
    path = os.path.join(mp, "shard.bin")
    runs = dict(b.patterns(path, local), **b.more_patterns(path, local))
    runs["eight"] = lambda: bench.eight_readers(path, size)
    try:
        for name in names:
            raw = os.path.join(work, name + ".raw")
            cmd = [bench.STUB, mp, str(size), "shard.bin", "--direct", "--trace", raw]
            with bench.Mount(mp, cmd, os.path.join(work, "stub.log")) as m:
                bench.drop_caches()
                runs[name]()  # raises if the pattern fails
                said = "direct" if "files open direct" in m.tail() else "through the page cache"
            with open(raw) as f:
                lines = [ln for ln in f.read().splitlines() if ln]
            with open(os.path.join(a.out, name + ".trace"), "w") as f:
                f.write("# %s\n" % WHAT[name])
                f.write("# recorded %s by tools/bench/record_traces.py: Linux %s, the stub FUSE filesystem "
                        "(1 MiB READs, read_ahead_kb 16384), the file opened %s, page cache dropped\n" % (
                            datetime.date.today().isoformat(), platform.release(), said))
                f.write("# file_size %d; one READ a line: HANDLE OFFSET SIZE, in the order the daemon took them\n" % size)
                f.write("\n".join(lines) + "\n")
            print("%s: %d READs" % (name, len(lines)), flush=True)
            time.sleep(0.2)
    finally:
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", mp])
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
