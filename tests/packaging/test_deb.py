"""The Debian package, end to end, as an operator would use it (needs root, apt, /dev/fuse, nginx):

build it with packaging/build-deb, lintian it, install it with apt-get, mount the Hub emulator
through mount(8) -> /usr/sbin/mount.fuse.hubfs (with `mount -t fuse.hubfs` and with an
/etc/fstab line), read a file through the mount and compare it with the fixture, unmount, purge,
and check that nothing is left behind. Whatever fails, the mounts are undone, /etc/fstab is
restored, the emulator is stopped and the package is purged.

    /usr/bin/python3 -m pytest -q tests/packaging            (-m deb selects these tests)
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "hubemu"))

from hubemu import Emulator  # noqa: E402

PY = "/usr/bin/python3"
PKG = "hubfs"
FSTAB = "/etc/fstab"
HELPER_SRC = os.path.join(ROOT, "packaging", "debian", "mount.fuse.hubfs")
REPO, FILE = "hubfs-test/tiny-model", "config.json"

pytestmark = pytest.mark.deb

APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def run(args, check=True, timeout=300, **kw):
    """Runs a command; on failure the assertion shows its output."""
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, "%s -> %d\n%s" % (" ".join(args), p.returncode, p.stdout[-8000:])
    return p


def pkg_status(name=PKG):
    """dpkg's abbreviated status ('ii ', 'rc ', ...), or '' when dpkg has never heard of it."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", name], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def purge():
    if pkg_status() not in ("", "un"):
        run(["apt-get", "purge", "-y", "-q", PKG], env=APT_ENV, check=False)
    if pkg_status() not in ("", "un"):  # apt could not (e.g. a broken maintainer script): force it
        run(["dpkg", "--purge", "--force-all", PKG], check=False)


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1].replace("\\040", " ") == path:
                return fields
    return None


def unmount(path):
    """umount, then a lazy fusermount3; waits until the kernel no longer lists it."""
    for cmd in (["umount", path], ["fusermount3", "-u", "-z", path]):
        if not mounted(path):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while mounted(path) and time.time() < deadline:
            time.sleep(0.05)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fixture_file(fixture_dir, repo_id, path, branch="main"):
    """(sha256, bytes) of a file at a branch of the fixture (repos.json + objects/)."""
    with open(os.path.join(fixture_dir, "repos.json")) as f:
        doc = json.load(f)
    repo = next(r for r in doc["repos"] if r["id"] == repo_id and r["type"] == "model")
    commit = repo["refs"]["branches"][branch]
    meta = next(c for c in repo["commits"] if c["id"] == commit)["files"][path]
    with open(os.path.join(fixture_dir, "objects", meta["sha256"]), "rb") as f:
        return meta["sha256"], f.read()


def check_mount(mp, fixture_dir, expect_opts=()):
    fields = mounted(mp)
    assert fields, "%s is not mounted" % mp
    assert fields[2] == "fuse.hubfs", fields
    opts = fields[3].split(",")
    assert "ro" in opts, fields
    for o in expect_opts:
        assert o in opts, fields
    want_sha, want = fixture_file(fixture_dir, REPO, FILE)
    with open(os.path.join(mp, REPO, FILE), "rb") as f:
        got = f.read()
    assert sha256(got) == want_sha
    assert got == want


@pytest.fixture(scope="module")
def env():
    """Skips where the package cannot be tested; yields a scratch dir, removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get install, mount)")
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        pytest.skip("not a Debian system")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    if pkg_status() not in ("", "un"):
        pytest.skip("a hubfs package is already installed here (%s); this test would replace and purge it"
                    % pkg_status())
    tmp = tempfile.mkdtemp(prefix="hubfs-deb-test-")
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def deb(env):
    """packaging/build-deb into the scratch dir: the path of the .deb."""
    out = os.path.join(env, "deb")
    p = run([os.path.join(ROOT, "packaging", "build-deb"), out], timeout=900)
    path = p.stdout.strip().splitlines()[-1]
    assert os.path.basename(path).startswith("hubfs_") and path.endswith(".deb"), p.stdout[-4000:]
    assert os.path.isfile(path)
    return path


@pytest.fixture(scope="module")
def installed(deb):
    """The package installed with apt-get; purged at the end whatever happened. Yields dpkg -L."""
    try:
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "./" + os.path.basename(deb)],
            cwd=os.path.dirname(deb), env=APT_ENV)
        assert pkg_status() == "ii"
        files = run(["dpkg", "-L", PKG]).stdout.split("\n")
        yield [f for f in files if f.strip()]
    finally:
        purge()


@pytest.fixture(scope="module")
def emu(env):
    fx = os.path.join(env, "fixture")
    run([PY, os.path.join(ROOT, "tools", "hubemu", "gen_fixture.py"), fx, "--preset", "test"])
    e = Emulator(fx)
    try:
        e.fixture_dir = fx
        yield e
    finally:
        e.stop()


def test_lintian(deb):
    p = run(["lintian", "--info", "--display-info", deb], check=False, timeout=600)
    lines = p.stdout.splitlines()
    errors = [line for line in lines if line.startswith("E: ")]
    warnings = [line for line in lines if line.startswith("W: ")]
    assert not errors, p.stdout
    # A warning that is kept must be overridden, with its reason, in debian/*lintian-overrides.
    assert not warnings, p.stdout


def test_files_installed(installed, env):
    for path in ("/usr/bin/hubfs", "/usr/sbin/mount.fuse.hubfs"):
        st = os.stat(path)
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o111, path
    for path in ("/etc/hubfs/hubfs.conf", "/usr/share/man/man1/hubfs.1.gz",
                 "/usr/share/man/man8/mount.fuse.hubfs.8.gz", "/usr/share/doc/hubfs/copyright"):
        assert os.path.isfile(path), path
    units = [f for f in installed if f.endswith("/systemd/system/hubfs.service")]
    assert units and os.path.isfile(units[0]), installed
    with open(units[0]) as f:
        unit = f.read()
    assert "ExecStart=/usr/bin/hubfs mount /hf --foreground" in unit
    assert "CacheDirectory=hubfs" in unit
    # Installed, not enabled.
    assert not os.path.lexists("/etc/systemd/system/multi-user.target.wants/hubfs.service")
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PKG]).stdout
    assert "/etc/hubfs/hubfs.conf" in conffiles
    # The shipped config documents every key of `hubfs mount`, all commented out.
    with open("/etc/hubfs/hubfs.conf") as f:
        conf = f.read()
    for key in ("endpoint", "token-file", "cache-dir", "cache-size", "memory-cache", "min-free", "revision-ttl",
                "request-timeout", "o", "metrics"):
        assert "\n# %s = " % key in conf, key
    assert "[mount]" in conf
    assert "hubfs 0.1" in run(["/usr/bin/hubfs", "--version"]).stdout
    # hubfs parses the shipped config (every command reads it) and takes all defaults from it.
    out = run(["/usr/bin/hubfs", "cache", "clear", "--cache-dir", os.path.join(env, "no-cache")]).stdout
    assert "nothing to clear" in out, out


def test_mount_t(installed, emu, env):
    """mount -t fuse.hubfs with hubfs options as mount options; the cache goes where cache_dir= says."""
    mp, cache = os.path.join(env, "hf"), os.path.join(env, "cache")
    os.makedirs(mp, exist_ok=True)
    token = os.path.join(env, "token")
    with open(token, "w") as f:
        f.write("hf_alice\n")
    opts = "endpoint=%s,cache_dir=%s,token_file=%s,cache_size=1G,allow_other" % (emu.hub_url, cache, token)
    try:
        run(["mount", "-t", "fuse.hubfs", "hubfs", mp, "-o", opts], timeout=60)
        check_mount(mp, emu.fixture_dir, expect_opts=("allow_other",))
        assert os.listdir(os.path.join(mp, "hubfs-test", "private-model")), "token_file= not used"
        assert os.path.isdir(cache) and stat.S_IMODE(os.stat(cache).st_mode) == 0o700
        status = run(["/usr/bin/hubfs", "status"], timeout=60).stdout
        assert mp in status and emu.hub_url in status, status
    finally:
        unmount(mp)
    assert not mounted(mp)


def test_fstab_mount(installed, emu, env):
    """An /etc/fstab line with mount(8)-only options and config=FILE; root's cache is /var/cache/hubfs."""
    mp = os.path.join(env, "hf")
    os.makedirs(mp, exist_ok=True)
    conf, token = os.path.join(env, "hubfs.conf"), os.path.join(env, "token-bob")
    with open(token, "w") as f:
        f.write("hf_bob\n")  # a valid token without access: no ambient token from root's $HF_HOME
    with open(conf, "w") as f:
        f.write('[mount]\nendpoint = "%s"\ntoken-file = "%s"\nrevision-ttl = 5\no = ["allow_other", "noatime"]\n'
                % (emu.hub_url, token))
    line = ("hubfs %s fuse.hubfs _netdev,nofail,noauto,comment=hubfs-deb-test,x-systemd.mount-timeout=30,"
            "config=%s 0 0\n" % (mp, conf))
    with open(FSTAB, "rb") as f:
        saved = f.read()
    try:
        with open(FSTAB, "ab") as f:
            if saved and not saved.endswith(b"\n"):
                f.write(b"\n")
            f.write(line.encode())
        run(["mount", mp], timeout=60)
        check_mount(mp, emu.fixture_dir, expect_opts=("allow_other", "noatime"))
        cache = "/var/cache/hubfs"
        assert os.path.isdir(cache) and stat.S_IMODE(os.stat(cache).st_mode) == 0o700
        run(["umount", mp], timeout=60)
        assert not mounted(mp)
    finally:
        unmount(mp)
        with open(FSTAB, "wb") as f:
            f.write(saved)


def test_purge_leaves_nothing(installed):
    run(["apt-get", "purge", "-y", "-q", PKG], env=APT_ENV)
    assert pkg_status() in ("", "un"), pkg_status()
    left = [f for f in installed if os.path.lexists(f) and not os.path.isdir(f)]
    assert not left, left
    for path in ("/usr/bin/hubfs", "/usr/sbin/mount.fuse.hubfs", "/etc/hubfs", "/var/cache/hubfs",
                 "/lib/systemd/system/hubfs.service", "/usr/lib/systemd/system/hubfs.service",
                 "/usr/share/man/man1/hubfs.1.gz", "/usr/share/man/man8/mount.fuse.hubfs.8.gz",
                 "/usr/share/doc/hubfs", "/var/lib/systemd/deb-systemd-helper-enabled/hubfs.service.dsh-also"):
        assert not os.path.lexists(path), path


def test_helper_translates_options(tmp_path):
    """mount.fuse.hubfs alone, with a stand-in hubfs that records its argv: no package needed."""
    rec = tmp_path / "argv"
    fake = tmp_path / "hubfs"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%%s\\n" "$a"; done > %s\n'
                    'printf "XDG_CACHE_HOME=%%s\\n" "${XDG_CACHE_HOME:-}" >> %s\n' % (rec, rec))
    fake.chmod(0o755)
    helper = tmp_path / "mount.fuse.hubfs"
    with open(HELPER_SRC) as f:
        text = f.read()
    assert "\nHUBFS=/usr/bin/hubfs\n" in text
    helper.write_text(text.replace("\nHUBFS=/usr/bin/hubfs\n", "\nHUBFS=%s\n" % fake))
    helper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}

    def call(*args):
        if rec.exists():
            rec.unlink()
        run([str(helper), *args], env=env)
        return rec.read_text().splitlines() if rec.exists() else None

    argv = call("hubfs", "/mnt/x", "-n", "-v", "-o",
                "rw,_netdev,nofail,noauto,defaults,user,x-systemd.automount,comment=c,allow_other,"
                "cache_dir=/c,cache-size=3G,memory_cache=2G,min_free=5G,endpoint=http://e:1/,token_file=/t,"
                "revision_ttl=7,request_timeout=9,no_huge_pages,hf_cache=/h,passthrough_prefetch_mib=64,direct_min_mib=32,metrics=/m.prom,log_level=debug,"
                "noatime", "-t", "fuse.hubfs")
    assert argv == ["mount", "/mnt/x", "--cache-dir", "/c", "--cache-size", "3G", "--memory-cache", "2G",
                    "--min-free", "5G", "--endpoint", "http://e:1/", "--token-file", "/t", "--revision-ttl", "7",
                    "--request-timeout", "9", "--no-huge-pages", "--hf-cache", "/h", "--passthrough-prefetch-mib", "64", "--direct-min-mib", "32",
                    "--metrics", "/m.prom", "--log-level", "debug",
                    "-o", "allow_other,noatime", "XDG_CACHE_HOME="], argv
    # config= goes before the subcommand; without cache_dir= root caches under /var/cache.
    argv = call("hubfs", "/mnt/y", "-o", "config=/etc/x.conf,ro")
    assert argv[:4] == ["--config", "/etc/x.conf", "mount", "/mnt/y"], argv
    assert argv[-1] == ("XDG_CACHE_HOME=/var/cache" if os.geteuid() == 0 else "XDG_CACHE_HOME="), argv
    # mount -f: nothing is run.
    assert call("hubfs", "/mnt/z", "-f", "-o", "allow_other") is None
    # Bad invocations fail (mount(8) status 1: usage).
    assert run([str(helper), "hubfs"], check=False, env=env).returncode == 1
    assert run([str(helper), "hubfs", "/mnt/x", "--bogus"], check=False, env=env).returncode == 1
