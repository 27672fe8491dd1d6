#!/usr/bin/python3
"""The demo's main job (run by tools/demo): emulator + generated model + mount + load."""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "hubemu"))
from hubemu import Emulator  # noqa: E402

HUBFS = os.environ.get("HUBFS_BIN", os.path.join(ROOT, "build", "tools", "hubfs"))
REPO = "hubfs-demo/tiny-llama"

import numpy as np  # noqa: E402

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32,
          "U8": np.uint8, "I8": np.int8, "F64": np.float64, "BOOL": np.bool_}


def load_safetensors(path):
    """What a safetensors loader does: 8-byte header length, JSON header, then every tensor."""
    tensors = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name in sorted(k for k in header if k != "__metadata__"):
            info = header[name]
            a, b = info["data_offsets"]
            buf = os.pread(f.fileno(), b - a, base + a)
            tensors[name] = np.frombuffer(buf, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def timed_load(directory, shards):
    """Loads every shard in `directory` the way a safetensors loader does: (seconds, tensors)."""
    t0 = time.time()
    n = sum(len(load_safetensors(os.path.join(directory, s))) for s in shards)
    return time.time() - t0, n


def main():
    work = tempfile.mkdtemp(prefix="hubfs-demo-")
    fixture = os.path.join(work, "fixture")
    mnt = os.path.join(work, "mnt")
    cache = os.path.join(work, "cache")
    os.mkdir(mnt)
    print("hubfs demo: generating a safetensors model into a local Hub emulator ...", flush=True)
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "hubemu", "gen_fixture.py"), fixture,
                    "--preset", "demo"], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(fixture, "repos.json")) as f:
        doc = json.load(f)
    repo = next(r for r in doc["repos"] if r["id"] == REPO)
    head = repo["refs"]["branches"][repo["default_branch"]]
    files = next(c for c in repo["commits"] if c["id"] == head)["files"]
    emu = Emulator(fixture)
    proc = None
    try:
        print("emulator: hub %s, CDN (nginx) %s" % (emu.hub_url, emu.cdn_url))
        proc = subprocess.Popen([HUBFS, "mount", mnt, "--foreground", "--endpoint", emu.hub_url, "--cache-dir", cache],
                                stderr=open(os.path.join(work, "hubfs.log"), "wb"))
        deadline = time.time() + 20
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("hubfs failed to mount; see %s/hubfs.log" % work)
            time.sleep(0.05)
        model_dir = os.path.join(mnt, *REPO.split("/"))
        print("mounted %s at %s" % (emu.hub_url, mnt))
        print("$ ls %s" % model_dir)
        for name in sorted(os.listdir(model_dir)):
            print("    %-40s %12d bytes" % (name, os.stat(os.path.join(model_dir, name)).st_size))
        index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
        shards = sorted(set(index["weight_map"].values()))
        total = sum(files[s]["size"] for s in shards)
        local = os.path.join(work, "download")
        os.mkdir(local)
        t0 = time.time()
        for s in shards:
            subprocess.run(["curl", "-sfL", "-o", os.path.join(local, s), "%s/%s/resolve/main/%s" % (emu.hub_url, REPO, s)],
                           check=True)
        curl_s = time.time() - t0
        local_cold_s = timed_load(local, shards)[0]
        download_s = curl_s + local_cold_s
        local_hot_s = min(timed_load(local, shards)[0] for _ in range(2))
        emu.clear_log()  # from here on, the origin's log counts hubfs's requests only
        print("baseline: curl downloads the shards (%.0f MiB) to local disk in %.2f s, loading them takes %.2f s more"
              % (total / 2**20, curl_s, local_cold_s))
        print("baseline: loading the local copies again (page cache) takes %.2f s" % local_hot_s)
        for label, base, what in (("cold: first read, from the origin through the mount", download_s, "download, then load"),
                                  ("warm: again, from hubfs's cache + page cache", local_hot_s, "local copies' load")):
            dt, n = timed_load(model_dir, shards)
            print("load %-55s %d tensors, %.0f MiB in %.2f s = %4.0f MiB/s (%.2fx the time of %s)" %
                  (label, n, total / 2**20, dt, total / 2**20 / dt, dt / base, what))
        bad = 0
        for s in shards:
            h = hashlib.sha256()
            with open(os.path.join(model_dir, s), "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            ok = h.hexdigest() == files[s]["sha256"]
            bad += not ok
            print("sha256 %s %s" % (s, "OK" if ok else "MISMATCH"))
        cdn_bytes = sum(r.get("bytes", 0) for r in emu.log() if r["origin"] == "cdn")
        print("origin (CDN) bytes fetched by hubfs: %.0f MiB for %.0f MiB of shards read twice" %
              (cdn_bytes / 2**20, total / 2**20))
        return 1 if bad else 0
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", mnt])
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        emu.stop()
        print("unmounted, emulator stopped")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
