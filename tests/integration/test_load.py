"""Load under faults: 32 concurrent readers over 20 files for 60 s (HUBFS_LOAD_SECONDS), with 5% of
origin requests failing in assorted ways. Zero wrong bytes, zero hung requests; the error rate the
readers saw is printed. Small caches keep the origin busy for the whole run."""
import os
import random
import subprocess
import threading
import time

import pytest

from harness import Mount

SECONDS = float(os.environ.get("HUBFS_LOAD_SECONDS", "60"))
REQUEST_TIMEOUT = 10


@pytest.mark.slow
def test_32_readers_20_files_under_5_percent_faults(emu, fixture):
    seed = int(os.environ.get("HUBFS_TEST_SEED", random.randrange(1 << 30)))
    print("seed", seed)
    files = []
    for rtype, rid in (("model", "hubfs-test/tiny-model"), ("model", "openai-community/gpt2"),
                       ("model", "hubfs-test/another-model"), ("space", "hubfs-test/demo-space")):
        for path, meta in fixture.files(rid, rtype=rtype).items():
            if meta["size"] > 0:
                files.append((rtype, rid, path, meta))
    files = sorted(files, key=lambda f: -f[3]["size"])[:20]
    assert len(files) == 20
    want = {f[2] + f[1]: fixture.read(f[3]) for f in files}
    p = 0.05
    emu.set_faults([
        {"origin": "hub", "match": "/resolve/", "status": 503, "probability": p / 2},
        {"origin": "hub", "match": "/resolve/", "reset_after_bytes": 10, "probability": p / 2},
        {"origin": "cdn", "match": "^/lfs/", "status": 502, "probability": p / 5},
        {"origin": "cdn", "match": "^/lfs/", "reset_after_bytes": 65536, "probability": p / 5},
        {"origin": "cdn", "match": "^/lfs/", "truncate": True, "probability": p / 5},
        {"origin": "cdn", "match": "^/lfs/", "wrong_range": True, "probability": p / 5},
        {"origin": "cdn", "match": "^/lfs/", "range_as_200": True, "probability": p / 5},
    ], seed=seed)
    stats = {"reads": 0, "errors": 0, "wrong": 0, "hung": 0, "slowest": 0.0}
    lock = threading.Lock()
    stop = time.time() + SECONDS
    try:
        # A memory cache far smaller than the working set and no disk tier: reads keep going to the origin.
        blocker = os.path.join(emu.state_dir, "no-disk-cache")
        open(blocker, "w").close()
        with Mount(emu.hub_url, cache_dir=os.path.join(blocker, "cache"),
                   extra_args=["--memory-cache", "4M", "--block-size-mib", "1",
                               "--request-timeout", str(REQUEST_TIMEOUT), "--stall-timeout", "3"]) as m:
            def reader(i):
                rng = random.Random(seed + i)
                while time.time() < stop:
                    rtype, rid, path, meta = rng.choice(files)
                    prefix = {"model": (), "space": ("spaces",)}[rtype]
                    full = m.path(*prefix, *rid.split("/"), path)
                    data = want[path + rid]
                    off = rng.randrange(0, len(data))
                    n = rng.choice([4096, 65536, 1 << 20, len(data)])
                    t0 = time.time()
                    try:
                        fd = os.open(full, os.O_RDONLY)
                        try:
                            got = os.pread(fd, n, off)
                        finally:
                            os.close(fd)
                        ok, err = got == data[off:off + n], False
                    except OSError:
                        ok, err = True, True
                    dt = time.time() - t0
                    with lock:
                        stats["reads"] += 1
                        stats["errors"] += err
                        stats["wrong"] += not ok
                        stats["hung"] += dt > REQUEST_TIMEOUT + 5
                        stats["slowest"] = max(stats["slowest"], dt)

            def dropper():
                while time.time() < stop:
                    time.sleep(1)
                    subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"])  # the page cache too

            threads = [threading.Thread(target=reader, args=(i,)) for i in range(32)] + [threading.Thread(target=dropper)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(SECONDS + 60)
            assert not any(t.is_alive() for t in threads), "a reader hung"
        applied = sum(r["applied"] for r in emu.faults())
        origin_requests = len([r for r in emu.log() if "/resolve/" in r["path"] or r["origin"] == "cdn"])
    finally:
        emu.clear_faults()
    print("load: %d origin requests, %d faults injected" % (origin_requests, applied))
    print("load: %(reads)d reads, %(errors)d errors, %(wrong)d wrong, %(hung)d hung, slowest %(slowest).2f s" % stats)
    print("load: reader error rate %.3f%%" % (100.0 * stats["errors"] / max(1, stats["reads"])))
    assert stats["reads"] > 1000
    assert applied > 20, "the run must actually exercise faults"
    assert stats["wrong"] == 0
    assert stats["hung"] == 0
