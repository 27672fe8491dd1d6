"""A mount started without the Hub: after a reboot during an outage, or on an air-gapped machine
after `hubfs warm`, the repos and files the cache holds are served (listings, bytes by SHA-256),
anything else is EIO in bounded time, and `--offline` sends no request at all."""
import errno
import os
import subprocess
import time

from harness import HUBFS_BIN, Mount, dead_endpoint, expect_errno, sha256_file

MODEL = "hubfs-test/tiny-model"


def listing(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.stat(p).st_size
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_a_mount_without_the_hub_serves_what_the_cache_holds(emu, fixture, tmp_path):
    cache = str(tmp_path / "cache")
    files = fixture.files(MODEL)
    read_before = ("model.safetensors", "config.json")
    with Mount(emu.hub_url, cache_dir=cache) as m:
        root = m.path(*MODEL.split("/"))
        for name in read_before:
            assert sha256_file(os.path.join(root, name)) == files[name]["sha256"]
        org_listing = sorted(os.listdir(m.path("hubfs-test")))
        assert "tiny-model" in org_listing

    # The Hub is gone (connection refused): the same cache, a fresh daemon with nothing in memory.
    with Mount(dead_endpoint(), cache_dir=cache) as m:
        root = m.path(*MODEL.split("/"))
        t0 = time.monotonic()
        assert listing(root) == {p: meta["size"] for p, meta in files.items()}
        assert time.monotonic() - t0 < 30  # bounded retries, once per repo, not per lookup
        for name in read_before:
            assert sha256_file(os.path.join(root, name)) == files[name]["sha256"]
        assert sorted(os.listdir(m.path("hubfs-test"))) == org_listing  # the org's last listing
        # Never fetched: EIO, not wrong bytes and not a hang.
        expect_errno(errno.EIO, lambda: read(os.path.join(root, "onnx", "model.onnx")))
        # A repo this cache never saw.
        expect_errno(errno.EIO, lambda: os.listdir(m.path("hubfs-test", "another-model")))
        log = m.read_log()
    assert "kept in the cache" in log, log

    # --offline: the Hub is up, and never asked.
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache, extra_args=["--offline"]) as m:
        root = m.path(*MODEL.split("/"))
        assert listing(root) == {p: meta["size"] for p, meta in files.items()}
        for name in read_before:
            assert sha256_file(os.path.join(root, name)) == files[name]["sha256"]
        t0 = time.monotonic()
        expect_errno(errno.EIO, lambda: read(os.path.join(root, "onnx", "model.onnx")))
        assert time.monotonic() - t0 < 2, "offline: no retries to wait for"
    emu.wait_log(lambda recs: True)
    assert emu.log() == [], emu.log()


def test_warm_then_a_mount_on_an_air_gapped_machine(emu, fixture, tmp_path):
    """`hubfs warm` keeps the repo's revision and tree with its blocks: an offline mount (here by
    HF_HUB_OFFLINE, as huggingface_hub reads it) serves the whole repo."""
    rid = "hubfs-test/another-model"
    cache = str(tmp_path / "cache")
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    r = subprocess.run([HUBFS_BIN, "warm", rid, "--endpoint", emu.hub_url, "--cache-dir", cache],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache, env={"HF_HUB_OFFLINE": "1"}) as m:
        root = m.path(*rid.split("/"))
        files = fixture.files(rid)
        assert listing(root) == {p: meta["size"] for p, meta in files.items()}
        for p, meta in files.items():
            assert sha256_file(os.path.join(root, p)) == meta["sha256"], p
        assert os.listdir(m.path("hubfs-test")) == ["another-model"]  # all warm knew of the org
        # Another revision name was never resolved here: EIO, at once.
        expect_errno(errno.EIO, lambda: os.listdir(m.path("hubfs-test", "another-model@no-such-branch")))
        log = m.read_log()
    emu.wait_log(lambda recs: True)
    assert emu.log() == [], emu.log()
    assert "offline: the Hub is never asked" in log, log


def test_a_hub_that_answers_5xx_is_unreachable_but_an_answer_is_not_overridden(emu, fixture, tmp_path):
    """An outage behind a live load balancer (the API answers 503) is served from the cache, and
    counted where `hubfs status` shows it; a real answer (404: the repo is gone) is never replaced
    by what the cache remembers."""
    cache = str(tmp_path / "cache")
    meta = fixture.files(MODEL)["config.json"]
    with Mount(emu.hub_url, cache_dir=cache) as m:
        assert sha256_file(m.path(*MODEL.split("/"), "config.json")) == meta["sha256"]
    try:
        emu.set_faults([{"match": "^/api/", "status": 503}])
        with Mount(emu.hub_url, cache_dir=cache) as m:
            assert sha256_file(m.path(*MODEL.split("/"), "config.json")) == meta["sha256"]
            stats = m.stats()
            assert int(stats["fs.served_offline"]) >= 2, stats  # the revision and its tree
            r = subprocess.run([HUBFS_BIN, "status"], capture_output=True, text=True, timeout=30)
            assert "listings served from the cache, the Hub unreachable" in r.stdout, r.stdout
        emu.set_faults([{"match": "^/api/models/" + MODEL + "(/|$)", "status": 404}])
        with Mount(emu.hub_url, cache_dir=cache) as m:
            expect_errno(errno.ENOENT, lambda: os.stat(m.path(*MODEL.split("/"))))
            assert "fs.served_offline" not in m.stats() or m.stats()["fs.served_offline"] == "0"
    finally:
        emu.clear_faults()
