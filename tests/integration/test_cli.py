"""The operator commands: warm (pre-fetch into the cache), status, the Prometheus metrics file,
the config file, and --help documenting every mount option."""
import fcntl
import os
import subprocess
import time

from harness import HUBFS_BIN, Mount, cdn_bytes, eventually, sha256_file

MODEL = "hubfs-test/tiny-model"


def hubfs(*args, env=None, timeout=120, cwd=None):
    e = dict(os.environ)
    e.pop("HF_TOKEN", None)
    e.pop("HF_HUB_CACHE", None)
    # No ambient huggingface_hub cache or token file: a warm fetches what the test expects.
    e["HF_HOME"] = "/nonexistent/hubfs-test-hf-home"
    e.update(env or {})
    return subprocess.run([HUBFS_BIN, *args], capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd)


def test_help_documents_every_mount_option():
    r = hubfs("mount", "--help")
    assert r.returncode == 0
    for opt in ("--endpoint", "--token-file", "--cache-dir", "--cache-size", "--memory-cache", "--revision-ttl",
                "--request-timeout", "--foreground", "-o", "--metrics", "--min-free", "--offline", "--hf-cache"):
        assert opt in r.stdout, opt
    assert "20G" in r.stdout


def test_bad_size_is_a_clear_error(tmp_path):
    r = hubfs("mount", str(tmp_path), "--cache-size", "lots")
    assert r.returncode != 0 and "not a size" in r.stderr


def test_a_size_below_a_few_blocks_is_a_clear_error(tmp_path):
    """A plain number is bytes: "--memory-cache 1024" is a 1 KiB cache, not 1 GiB. Refused, with
    the unit it needs, before anything is mounted."""
    for args in (("--memory-cache", "1024"), ("--cache-size", "3M", "--block-size-mib", "1")):
        r = hubfs("mount", str(tmp_path), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "less than 4 blocks" in r.stderr and "512M" in r.stderr, r.stderr
    assert not os.path.ismount(str(tmp_path))


def test_warm_then_mount_reads_nothing_from_the_origin(emu, fixture, tmp_path):
    cache = str(tmp_path / "cache")
    r = hubfs("warm", MODEL, "*.safetensors", "config.json", "--endpoint", emu.hub_url, "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    assert "warmed 2 files" in r.stdout
    # Idempotent: a second run fetches nothing.
    emu.clear_log()
    r = hubfs("warm", MODEL, "*.safetensors", "config.json", "--endpoint", emu.hub_url, "--cache-dir", cache)
    assert r.returncode == 0 and "0.0 MiB fetched" in r.stdout, r.stdout
    assert not [x for x in emu.log() if "/resolve/" in x["path"] or x["origin"] == "cdn"]
    with Mount(emu.hub_url, cache_dir=cache) as m:
        for name in ("model.safetensors", "config.json"):
            assert sha256_file(m.path(*MODEL.split("/"), name)) == fixture.files(MODEL)[name]["sha256"]
    # (Opening config.json may prefetch its small, unwarmed siblings: only the warmed files count.)
    warmed = ("/model.safetensors", "/config.json", fixture.files(MODEL)["model.safetensors"]["sha256"])
    assert not [x for x in emu.log() if x["path"].endswith(warmed)]


def test_a_cache_dir_serves_one_process_at_a_time(emu, fixture, tmp_path):
    """A second daemon on a cache directory in use would take the first's blocks in flight for
    leftovers, overrun the cap and never see the other's blocks: it is refused before mounting, and
    so are clear and verify --remove-bad; stats and verify read on (warm: the next test). Once the first mount ends,
    the next one uses the cache (nothing more from the origin)."""
    cache = str(tmp_path / "cache")
    meta = fixture.files(MODEL)["model.safetensors"]
    with Mount(emu.hub_url, cache_dir=cache) as m:
        assert sha256_file(m.path(*MODEL.split("/"), "model.safetensors")) == meta["sha256"]
        held = "(pid %d: mount %s)" % (m.proc.pid, os.path.realpath(m.mountpoint))
        other = tmp_path / "other"
        other.mkdir()
        try:
            r = hubfs("mount", str(other), "--foreground", "--endpoint", emu.hub_url, "--cache-dir", cache, timeout=30)
        finally:  # (were it not refused: the mount it made, or left by the timeout's kill)
            subprocess.run(["fusermount3", "-u", "-z", str(other)], stderr=subprocess.DEVNULL)
        assert r.returncode == 1 and "cache directory %s is in use %s" % (cache, held) in r.stderr, r.stderr
        assert "its own --cache-dir" in r.stderr
        for args in (("clear",), ("verify", "--remove-bad")):
            r = hubfs("cache", *args, "--cache-dir", cache)
            assert r.returncode == 1 and held in r.stderr and "unmount it first" in r.stderr, (args, r.stderr)
        for args in (("stats",), ("verify",)):
            r = hubfs("cache", *args, "--cache-dir", cache)
            assert r.returncode == 0, (args, r.stderr)
        assert "0 bad" in r.stdout
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache) as m:
        assert sha256_file(m.path(*MODEL.split("/"), "model.safetensors")) == meta["sha256"]
    assert not [x for x in emu.log() if x["origin"] == "cdn"]
    r = hubfs("cache", "clear", "--cache-dir", cache)
    assert r.returncode == 0 and "cache cleared" in r.stdout, r.stderr


def test_a_cache_dir_held_by_a_warm_is_waited_for_not_shared(emu, tmp_path):
    """The lock held by a process that is not a mount (a warm or clear under way): mount, warm and
    clear are refused and told to try again once it is done."""
    cache = tmp_path / "cache"
    (cache / "v2").mkdir(parents=True)  # a cache a mount has used
    with open(cache / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("pid 1234: warm %s\n" % MODEL)
        f.flush()
        mp = tmp_path / "hf"
        mp.mkdir()
        try:
            runs = [hubfs("mount", str(mp), "--endpoint", emu.hub_url, "--cache-dir", str(cache), timeout=30),
                    hubfs("warm", MODEL, "--endpoint", emu.hub_url, "--cache-dir", str(cache)),
                    hubfs("cache", "clear", "--cache-dir", str(cache))]
        finally:
            subprocess.run(["fusermount3", "-u", str(mp)], stderr=subprocess.DEVNULL)
        for r in runs:
            assert r.returncode == 1, r.stderr
            assert "is in use (pid 1234: warm %s); try again once it is done" % MODEL in r.stderr, r.stderr


def test_warm_beside_a_mount_warms_through_it(emu, fixture, tmp_path):
    """`hubfs warm` on the cache directory of a live mount reads the files through that mount (a
    second process may not fill the directory, and the mount would not see blocks written beside
    it): fetched once, kept by the mount's cache, and a remount reads them with no origin request."""
    cache = str(tmp_path / "cache")
    files = fixture.files(MODEL)
    warmed = ("/model.safetensors", "/config.json", files["model.safetensors"]["sha256"])
    with Mount(emu.hub_url, cache_dir=cache) as m:
        emu.clear_log()
        r = hubfs("warm", MODEL, "*.safetensors", "config.json", "--endpoint", emu.hub_url, "--cache-dir", cache)
        assert r.returncode == 0, r.stderr
        assert "warmed 2 files" in r.stdout and "through the mount at %s" % os.path.realpath(m.mountpoint) in r.stdout
        assert cdn_bytes(emu, files["model.safetensors"]["sha256"]) == files["model.safetensors"]["size"]
        r = hubfs("warm", MODEL, "*.safetensors", "config.json", "--endpoint", emu.hub_url, "--cache-dir", cache)
        assert r.returncode == 0 and "0.0 MiB fetched" in r.stdout, r.stdout
        r = hubfs("warm", MODEL, "nothing-like-this*", "--cache-dir", cache)
        assert r.returncode == 1 and "nothing in" in r.stderr, r.stderr
        # A dataset, by glob over paths in subdirectories: every match read, right, through the mount.
        r = hubfs("warm", "datasets/hubfs-test/big-dataset", "data/part-0000*.jsonl", "--cache-dir", cache)
        assert r.returncode == 0 and "warmed 10 files" in r.stdout and "through the mount" in r.stdout, r.stdout
        r = hubfs("warm", "datasets/hubfs-test/no-such-dataset", "--cache-dir", cache)
        assert r.returncode == 1 and "no-such-dataset: No such file or directory" in r.stderr, r.stderr
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache) as m:
        for name in ("model.safetensors", "config.json"):
            assert sha256_file(m.path(*MODEL.split("/"), name)) == files[name]["sha256"]
    assert not [x for x in emu.log() if x["path"].endswith(warmed)]


def test_a_daemonized_mount_names_its_own_pid_as_the_cache_holder(emu, fixture, tmp_path):
    """Without --foreground the command forks the daemon and exits: the lock names the daemon, the
    process a user would look for (or kill), not the command that has gone. The daemon changes its
    directory to /: a relative --cache-dir still names the directory under the one the command ran
    in."""
    rel = "rel-cache-%d" % os.getpid()
    cache, mp, other = str(tmp_path / rel), tmp_path / "hf", tmp_path / "other"
    mp.mkdir()
    other.mkdir()
    r = hubfs("mount", str(mp), "--endpoint", emu.hub_url, "--cache-dir", rel, timeout=30, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    pid = None
    try:
        pids = subprocess.run(["pgrep", "-f", "hubfs mount %s " % mp], capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, pids
        pid = int(pids[0])
        meta = fixture.files(MODEL)["config.json"]
        assert sha256_file(os.path.join(str(mp), *MODEL.split("/"), "config.json")) == meta["sha256"]
        assert eventually(lambda: os.path.isdir(os.path.join(cache, "v2", "meta")), 10)
        assert not os.path.exists("/" + rel)
        r = hubfs("mount", str(other), "--endpoint", emu.hub_url, "--cache-dir", cache, timeout=30)
        assert r.returncode == 1 and "(pid %d: mount %s)" % (pid, os.path.realpath(mp)) in r.stderr, r.stderr
        assert hubfs("unmount", str(mp)).returncode == 0
        assert eventually(lambda: not os.path.exists("/proc/%d" % pid), 10)
    finally:
        for p in (mp, other):  # (other: were the second mount not refused)
            subprocess.run(["fusermount3", "-u", str(p)], stderr=subprocess.DEVNULL)
        if pid is not None and os.path.exists("/proc/%d" % pid):
            os.kill(pid, 9)


def test_warm_missing_repo_fails_clearly(emu, tmp_path):
    r = hubfs("warm", "hubfs-test/nope", "--endpoint", emu.hub_url, "--cache-dir", str(tmp_path / "c"))
    assert r.returncode == 1 and "not-found" in r.stderr


def test_status_and_metrics_file(emu, fixture, tmp_path):
    prom = str(tmp_path / "hubfs.prom")
    with Mount(emu.hub_url, extra_args=["--metrics", prom]) as m:
        sha256_file(m.path(*MODEL.split("/"), "model.safetensors"))
        r = hubfs("status")
        assert r.returncode == 0, r.stdout + r.stderr
        assert m.mountpoint in r.stdout and emu.hub_url in r.stdout and "hit ratio" in r.stdout

        def reads():  # the file is written every second
            text = open(prom).read() if os.path.exists(prom) else ""
            return next((int(l.split()[1]) for l in text.splitlines() if l.startswith("hubfs_fs_reads ")), 0)

        assert eventually(lambda: reads() > 0, 30)
        text = open(prom).read()
    assert "# TYPE hubfs_fuse_read_latency_us histogram" in text


def test_config_file_sets_options_and_flags_win(emu, fixture, tmp_path):
    conf = tmp_path / "hubfs.conf"
    conf.write_text('[mount]\nendpoint = "http://127.0.0.1:9"\nrevision-ttl = 5\n')
    # The config's endpoint is unreachable; the flag must win over it.
    with Mount(emu.hub_url, env={"HUBFS_CONFIG": str(conf)}) as m:
        assert sha256_file(m.path(*MODEL.split("/"), "config.json")) == fixture.files(MODEL)["config.json"]["sha256"]
    # Without the flag, the config's endpoint and cache dir are used.
    cache = tmp_path / "cfg-cache"
    conf.write_text('[mount]\nendpoint = "%s"\ncache-dir = "%s"\n' % (emu.hub_url, cache))
    mp = tmp_path / "mnt"
    mp.mkdir()
    env = dict(os.environ, HUBFS_CONFIG=str(conf), HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_TOKEN", None)
    proc = subprocess.Popen([HUBFS_BIN, "mount", str(mp), "--foreground"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.ismount(mp) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        path = os.path.join(mp, *MODEL.split("/"), "config.json")
        assert sha256_file(path) == fixture.files(MODEL)["config.json"]["sha256"]
    finally:
        subprocess.run(["fusermount3", "-u", str(mp)])
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert os.path.isdir(cache / "v2")


def test_a_token_file_written_after_the_mount_is_picked_up(emu, fixture, tmp_path):
    """A system mount started at boot before its --token-file was written: said at once, and the
    token is used as soon as the file appears, with no remount."""
    rid = "hubfs-test/private-model"
    token_file = str(tmp_path / "etc-hubfs-token")
    with Mount(emu.hub_url, extra_args=["--token-file", token_file]) as m:
        log = m.read_log()
        assert "--token-file %s: No such file or directory; going on without a token" % token_file in log, log
        assert "token from --token-file %s: none (re-read when the file changes)" % token_file in log, log
        repo = m.path(*rid.split("/"))
        try:
            os.stat(repo)
            raise AssertionError("a private repo is visible without a token")
        except FileNotFoundError:
            pass
        with open(token_file, "w") as f:
            f.write("hf_alice\n")
        time.sleep(1.5)  # the file is looked at at most once a second
        for path, meta in fixture.files(rid).items():
            assert sha256_file(os.path.join(repo, path)) == meta["sha256"]


def test_a_token_from_the_environment_is_named_in_the_log(emu, fixture):
    """$HF_TOKEN wins over the token file, as in huggingface_hub, and the log says which was used."""
    with Mount(emu.hub_url, env={"HF_TOKEN": "hf_alice"}) as m:
        meta = fixture.files("hubfs-test/private-model")["config.json"]
        assert sha256_file(m.path("hubfs-test", "private-model", "config.json")) == meta["sha256"]
        log = m.read_log()
    assert "token from $HF_TOKEN: set" in log, log
    assert "hf_alice" not in log
