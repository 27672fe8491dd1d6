"""The fault matrix: every way the Hub and its CDN fail, checked by SHA-256 and errno, always in
bounded time. Each test sets its faults before the mount resolves the file (CDN faults are served
by the emulator's Python CDN, chosen when the hub answers the resolve)."""
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import Mount, sha256_file
from hubemu import Emulator

MODEL = "hubfs-test/tiny-model"
FAST = ["--request-timeout", "10", "--stall-timeout", "2"]


@pytest.fixture
def faults(emu):
    emu.clear_faults()
    emu.clear_log()
    yield emu
    emu.clear_faults()


def shard(m):
    return m.path(*MODEL.split("/"), "model.safetensors")


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, e.value


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_hub_errors_are_retried(faults, fixture, status):
    faults.set_faults([{"match": "/resolve/", "status": status, "count": 2}])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        assert sha256_file(shard(m)) == fixture.files(MODEL)["model.safetensors"]["sha256"]
    served = [r for r in faults.log("hub") if "/resolve/" in r["path"]]
    assert [r["status"] for r in served][:2] == [status, status]


def test_persistent_origin_failure_is_eio_in_bounded_time(faults):
    faults.set_faults([{"match": "/resolve/", "status": 503}])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        t0 = time.time()
        expect_errno(errno.EIO, read_all, shard(m))
        assert time.time() - t0 < 15


def test_connection_refused_is_eio_in_bounded_time(fixture):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with Mount("http://127.0.0.1:%d" % port, extra_args=FAST) as m:
        t0 = time.time()
        expect_errno(errno.EIO, os.stat, m.path(*MODEL.split("/")))
        assert time.time() - t0 < 15


def test_429_retry_after_is_honoured(faults, fixture):
    faults.set_faults([{"match": "/resolve/", "status": 429, "retry_after": 1, "count": 1}])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        t0 = time.time()
        assert sha256_file(shard(m)) == fixture.files(MODEL)["model.safetensors"]["sha256"]
        assert time.time() - t0 >= 1.8  # Retry-After + 1 s, as the official client waits
    statuses = [r["status"] for r in faults.log("hub") if "/resolve/" in r["path"]]
    assert statuses.count(429) == 1 and 206 in statuses + [r["status"] for r in faults.log("cdn")]


@pytest.mark.parametrize("fault", [
    {"reset_after_bytes": 100000, "count": 3},
    {"truncate": True, "count": 3},
    {"wrong_content_length": True, "count": 3},
    {"range_as_200": True, "count": 3},
    {"wrong_range": True, "count": 3},
    {"refuse": True, "count": 3},
], ids=lambda f: next(iter(f)))
def test_broken_cdn_answers_are_refetched_never_served(faults, fixture, fault):
    faults.set_faults([dict(fault, origin="cdn", match="^/lfs/")])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        assert sha256_file(shard(m)) == fixture.files(MODEL)["model.safetensors"]["sha256"]
    assert faults.faults()[0]["applied"] >= 1, "the fault was never injected"


def test_corrupt_small_file_is_never_served(faults, fixture):
    # tokenizer.json is LFS but fits in one block: it is hashed before anyone sees it.
    faults.set_faults([{"origin": "cdn", "match": "^/lfs/", "corrupt": True, "count": 1}])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        path = m.path(*MODEL.split("/"), "tokenizer.json")
        assert sha256_file(path) == fixture.files(MODEL)["tokenizer.json"]["sha256"]
        assert "do not match" in m.read_log()


def test_corrupt_large_file_is_detected_and_purged(faults, fixture):
    meta = fixture.files(MODEL)["model.safetensors"]
    faults.set_faults([{"origin": "cdn", "match": "^/lfs/", "corrupt": True, "count": 1}])
    with Mount(faults.hub_url, extra_args=FAST + ["--block-size-mib", "1"]) as m:
        first = sha256_file(shard(m))  # one block came back corrupted: documented in SEMANTICS.md
        deadline = time.time() + 10
        while "failed whole-file verification" not in m.read_log() and time.time() < deadline:
            time.sleep(0.1)
        assert "failed whole-file verification" in m.read_log()
        subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
        assert sha256_file(shard(m)) == meta["sha256"]
    assert first != meta["sha256"]


def test_stalled_connection_is_replaced(faults, fixture):
    faults.set_faults([{"origin": "cdn", "match": "^/lfs/", "stall_after_bytes": 1000, "stall_s": 20, "count": 1}])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        t0 = time.time()
        assert sha256_file(shard(m)) == fixture.files(MODEL)["model.safetensors"]["sha256"]
        assert time.time() - t0 < 15


def test_every_request_ends_in_bounded_time(faults):
    faults.set_faults([{"match": "/resolve/", "delay_s": 30}])
    with Mount(faults.hub_url, extra_args=["--request-timeout", "3"]) as m:
        t0 = time.time()
        expect_errno(errno.EIO, read_all, shard(m))
        assert time.time() - t0 < 8


def test_interrupted_reader_returns_promptly(faults):
    faults.set_faults([{"origin": "cdn", "match": "^/lfs/", "delay_s": 30}])
    with Mount(faults.hub_url, extra_args=["--request-timeout", "60"]) as m:
        reader = subprocess.Popen(["cat", shard(m)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        t0 = time.time()
        reader.send_signal(signal.SIGINT)
        reader.wait(10)
        assert time.time() - t0 < 3


def test_expired_cdn_url_is_reresolved(fixture):
    with Emulator(fixture.path, cdn_expiry_s=2) as e:
        with Mount(e.hub_url, extra_args=FAST + ["--block-size-mib", "1"]) as m:
            with open(shard(m), "rb") as f:
                head = f.read(1 << 20)
                time.sleep(3)  # the signed URL the mount holds has expired
                rest = f.read()
        import hashlib
        assert hashlib.sha256(head + rest).hexdigest() == fixture.files(MODEL)["model.safetensors"]["sha256"]
        resolves = [r for r in e.log("hub") if r["path"].endswith("/model.safetensors") and "/resolve/" in r["path"]]
        assert len(resolves) >= 2


def test_hub_unreachable_keeps_what_is_known(faults, fixture):
    with Mount(faults.hub_url, extra_args=FAST + ["--revision-ttl", "1"]) as m:
        cfg = m.path(*MODEL.split("/"), "config.json")
        assert sha256_file(cfg) == fixture.files(MODEL)["config.json"]["sha256"]
        assert sha256_file(shard(m)) == fixture.files(MODEL)["model.safetensors"]["sha256"]
        faults.set_faults([{"origin": "hub", "refuse": True}, {"origin": "cdn", "refuse": True}])
        time.sleep(1.5)  # past the revision TTL: re-resolution fails, the known commit stays
        subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
        assert sha256_file(cfg) == fixture.files(MODEL)["config.json"]["sha256"]
        assert sha256_file(shard(m)) == fixture.files(MODEL)["model.safetensors"]["sha256"]
        t0 = time.time()
        expect_errno(errno.EIO, os.stat, m.path("hubfs-test", "another-model"))
        assert time.time() - t0 < 15


def test_kill9_then_mount_recovers_the_mount_point(emu, fixture):
    m = Mount(emu.hub_url)
    mp = m.mountpoint
    try:
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(10)
        expect_errno(errno.ENOTCONN, os.listdir, mp)
        with Mount(emu.hub_url, mountpoint=mp) as m2:
            assert sha256_file(m2.path(*MODEL.split("/"), "config.json")) == fixture.files(MODEL)["config.json"]["sha256"]
    finally:
        m.stop()


def test_kill9_right_after_mount_never_leaves_a_hung_daemon(emu):
    """kill -9 at the moment the daemon starts serving: it used to stat() its own mount point (to
    find the device whose readahead it raises); a request to itself in flight when it died could
    never be answered, and that thread kept the dead daemon and its mount stuck for good. Each
    kill must end the process and leave a mount point that answers ENOTCONN."""
    for _ in range(8):
        m = Mount(emu.hub_url)
        try:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)  # a thread stuck in a request to its own mount keeps the process here
            expect_errno(errno.ENOTCONN, os.listdir, m.mountpoint)
        finally:
            m.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a mount's readahead needs root")
def test_mount_readahead_is_raised_as_root(emu):
    """As root the daemon raises the mount's BDI readahead (FUSE_INIT can only lower it), found
    from /proc/self/mountinfo, also for a mount point with a space in its name."""
    import tempfile
    base = tempfile.mkdtemp(prefix="hubfs-ra ")
    mp = os.path.join(base, "mnt point")
    os.mkdir(mp)
    try:
        with Mount(emu.hub_url, mountpoint=mp, extra_args=["--read-ahead-kb", "8192"]) as m:
            dev = os.stat(m.mountpoint).st_dev
            path = "/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(dev), os.minor(dev))
            deadline = time.time() + 5
            while time.time() < deadline:
                with open(path) as f:
                    if f.read().strip() == "8192":
                        break
                time.sleep(0.05)
            with open(path) as f:
                assert f.read().strip() == "8192", m.read_log()
    finally:
        os.rmdir(mp)
        os.rmdir(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon raises read_ahead_kb only as root")
def test_file_opened_right_after_mount_gets_the_raised_readahead(emu, fixture):
    """The kernel takes a file's readahead window from the mount's BDI when the file is opened:
    an open that raced the daemon's raise of read_ahead_kb kept 128 KiB READs for good. Opens
    wait (briefly, once) until the raise is done, so even a file opened the instant the mount
    answers is read in 1 MiB READs."""
    import tempfile
    base = tempfile.mkdtemp(prefix="hubfs-ra-")
    mp = os.path.join(base, "mnt")
    os.mkdir(mp)
    target = os.path.join(mp, *MODEL.split("/"), "model.safetensors")
    # A reader polling for the file before the mount exists: it opens it as soon as FUSE_INIT is
    # answered, well before any test code after the mount could.
    reader = subprocess.Popen([sys.executable, "-c", """
import os, sys, time
deadline = time.time() + 30
while True:
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit(2)
        time.sleep(0.0005)
while os.read(fd, 1 << 20):
    pass
""", target])
    try:
        with Mount(emu.hub_url, mountpoint=mp) as m:
            assert reader.wait(30) == 0
            stats = m.stats()
        assert stats["fuse.read.size_kib.p50"] == "1024", {k: v for k, v in stats.items() if "read.size" in k}
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        os.rmdir(mp)
        os.rmdir(base)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_exit_cleanly_with_files_open(emu, fixture, sig):
    m = Mount(emu.hub_url)
    try:
        f = open(m.path(*MODEL.split("/"), "config.json"), "rb")
        f.read(10)
        m.proc.send_signal(sig)
        rc = m.proc.wait(10)
        assert rc == 0
        with open("/proc/self/mounts") as mounts:
            assert m.mountpoint not in mounts.read()
        f.close()
    finally:
        m.stop()


def test_token_never_in_logs(emu, fixture):
    with Mount(emu.hub_url, token="hf_alice", extra_args=["--log-level", "debug"]) as m:
        sha256_file(m.path("hubfs-test", "private-model", "model.safetensors"))
        expect_errno(errno.ENOENT, os.stat, m.path("hubfs-test", "nope"))
        log = m.read_log()
        with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
            cmdline = f.read()
    assert "hf_alice" not in log and b"hf_alice" not in cmdline


def test_small_git_file_is_one_request_to_raw(faults, fixture):
    """A whole git-stored file is read from /raw/{commit}/{path}: one request, no 307 hop."""
    meta = fixture.files(MODEL)["config.json"]
    with Mount(faults.hub_url, extra_args=FAST) as m:
        faults.clear_log()
        assert read_all(m.path(*MODEL.split("/"), "config.json")) == fixture.read(meta)
    served = [r for r in faults.log("hub") if r["path"].endswith("/config.json")]
    assert len(served) == 1, served
    assert "/raw/" in served[0]["path"] and served[0]["status"] in (200, 206)


@pytest.mark.parametrize("status", [404, 403, 410])
def test_raw_refused_falls_back_to_resolve(faults, fixture, status):
    """If /raw/ refuses, the same read goes through /resolve/ at once (no backoff), right bytes."""
    meta = fixture.files(MODEL)["config.json"]
    faults.set_faults([{"match": "/raw/", "status": status}])
    with Mount(faults.hub_url, extra_args=FAST) as m:
        faults.clear_log()
        t0 = time.time()
        assert read_all(m.path(*MODEL.split("/"), "config.json")) == fixture.read(meta)
        assert time.time() - t0 < 1.5
    paths = [r["path"] for r in faults.log("hub") if "config.json" in r["path"]]
    assert any("/raw/" in p for p in paths) and any("/resolve/" in p for p in paths), paths
    assert all(f["applied"] >= 1 for f in faults.faults())


def test_range_reads_share_kept_alive_cdn_connections(faults, fixture):
    """Range GETs of file content reuse kept-alive connections: many requests, few connections
    at the CDN (nginx numbers each connection)."""
    meta = fixture.files(MODEL)["model.safetensors"]

    def ranges(recs):  # nginx's: a delayed request of an earlier test may end in the python CDN's log now
        return [r for r in recs if r.get("status") == 206 and r.get("via") == "nginx"]

    with Mount(faults.hub_url, extra_args=FAST + ["--block-size-mib", "1"]) as m:
        assert sha256_file(shard(m)) == meta["sha256"]
        # Every range's record (nginx writes one as a request ends, which may be a moment after
        # the reader has its bytes): the first ones are each on a new connection.
        recs = ranges(faults.wait_log(lambda rs: sum(r["bytes"] for r in ranges(rs)) >= meta["size"], origin="cdn"))
    conns = {r["conn"] for r in recs}
    assert len(recs) >= 8 and None not in conns
    assert len(conns) < len(recs), (len(conns), len(recs))


def test_small_files_read_in_order_are_fetched_further_ahead_on_a_slow_origin(faults, fixture):
    """Small files opened one after another in listing order while every GET takes 0.1 s: as the
    reader keeps catching up with the files fetched ahead of it, more are fetched ahead (beyond
    the first 8), so the origin serves many at once. A reader of one file costs at most 8 more
    requests, and reading in order again from far behind starts from 8 again."""
    rid = "hubfs-test/big-dataset"
    files = fixture.files(rid, rtype="dataset")
    names = sorted(p for p in files if p.startswith("data/"))
    assert len(names) == 1500
    faults.set_faults([{"match": "/raw/", "delay_s": 0.1}])

    def read(m, p):
        with open(m.path("datasets", *rid.split("/"), *p.split("/")), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == files[p]["sha256"], p

    def raw_files():
        return {r["path"] for r in faults.log("hub") if "/raw/" in r["path"] and "/data/" in r["path"]}

    with Mount(faults.hub_url) as m:
        os.listdir(m.path("datasets", *rid.split("/"), "data"))
        faults.clear_log()
        read(m, names[500])
        assert 1 <= len(raw_files()) <= 9
        faults.clear_log()
        read(m, names[0])  # far behind the first stream: a new one, 8 ahead
        fetched = raw_files()
        assert 1 <= len(fetched) <= 9
        faults.clear_log()
        for p in names[1:24]:
            read(m, p)
        fetched |= raw_files()
        print("files fetched while 24 were read:", len(fetched))
        # 8 ahead at most would be 32 files; the window grows to 32 ahead.
        assert len(fetched) >= 40, len(fetched)
        statuses = [r["status"] for r in faults.log("hub") if "/raw/" in r["path"]]
        assert set(statuses) <= {200, 206}, statuses
