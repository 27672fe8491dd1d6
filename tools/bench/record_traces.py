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

PATTERNS = {
    # name: (what, argv builder given (path, local shard))
    "seq": ("dd if=SHARD of=/dev/null bs=1M", lambda p, h: [["dd", "if=" + p, "of=/dev/null", "bs=1M"]]),
    "eight": ("8 dd processes at once, each the whole shard",
              lambda p, h: [["dd", "if=" + p, "of=/dev/null", "bs=1M"]] * 8),
    "st": ("safetensors eager load: 8 bytes, the header, every tensor by pread in key order",
           lambda p, h: [[bench.PY, bench.LOADERS, "st-load", p, "--header-from", h]]),
    "mmap": ("safe_open-style: the header, numpy.memmap, every tensor copied out in key order",
             lambda p, h: [[bench.PY, bench.LOADERS, "mmap-load", p, "--header-from", h]]),
    "threads": ("16 threads x own fd, a contiguous 1/16 each in 2 MiB reads",
                lambda p, h: [[bench.PY, bench.LOADERS, "threads", p, "--threads", "16", "--chunk-mib", "2"]]),
    "odirect": ("the same with O_DIRECT opens (fastsafetensors)",
                lambda p, h: [[bench.PY, bench.LOADERS, "odirect", p, "--threads", "16", "--chunk-mib", "2"]]),
    "ranks": ("4 tensor-parallel ranks: each its rows of every tensor, pread in key order",
              lambda p, h: [[bench.PY, bench.LOADERS, "ranks", p, "--ranks", "4", "--header-from", h]]),
    "shared": ("4 forked workers on one fd, interleaved 1 MiB preads",
               lambda p, h: [[bench.PY, bench.LOADERS, "shared-fd", p, "--workers", "4", "--chunk-mib", "1"]]),
    "prefetch": ("vLLM prefetch: 8 threads x 16 MiB in file order, then the mmap load",
                 lambda p, h: [[bench.PY, bench.LOADERS, "prefetch-mmap", p, "--threads", "8", "--chunk-mib", "16",
                                "--header-from", h]]),
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

    class Args:
        shard_mb = a.shard_mb
    b = bench.Bench.__new__(bench.Bench)
    b.a = Args()
    b.info = {}
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
    names = a.only.split(",") if a.only else list(PATTERNS)
    try:
        for name in names:
            what, argv = PATTERNS[name]
            mp = os.path.join(work, "mnt")
            raw = os.path.join(work, name + ".raw")
            cmd = [bench.STUB, mp, str(size), "shard.bin", "--direct", "--trace", raw]
            with bench.Mount(mp, cmd, os.path.join(work, "stub.log")) as m:
                path = os.path.join(mp, "shard.bin")
                bench.drop_caches()
                procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in argv(path, local)]
                for p in procs:
                    _, err = p.communicate(timeout=600)
                    if p.returncode != 0:
                        raise SystemExit("%s failed: %s" % (name, err.decode()[-500:]))
                said = "direct" if "files open direct" in m.tail() else "through the page cache"
            with open(raw) as f:
                lines = [ln for ln in f.read().splitlines() if ln]
            with open(os.path.join(a.out, name + ".trace"), "w") as f:
                f.write("# %s\n" % what)
                f.write("# recorded %s by tools/bench/record_traces.py: Linux %s, the stub FUSE filesystem "
                        "(1 MiB READs, read_ahead_kb 16384), the file opened %s, page cache dropped\n" % (
                            datetime.date.today().isoformat(), platform.release(), said))
                f.write("# file_size %d; one READ a line: HANDLE OFFSET SIZE, in the order the daemon took them\n" % size)
                f.write("\n".join(lines) + "\n")
            print("%s: %d READs" % (name, len(lines)), flush=True)
            time.sleep(0.2)
    finally:
        if os.path.ismount(os.path.join(work, "mnt")):
            subprocess.run(["fusermount3", "-u", os.path.join(work, "mnt")])
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
