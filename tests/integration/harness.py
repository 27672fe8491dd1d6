"""Test harness for integration tests: a generated fixture, the Hub emulator, and real hubfs mounts.

Every mount runs `hubfs mount --foreground` as a child process in a fresh temp dir with its own
cache dir; stop() unmounts with fusermount3 -u and then stops the daemon by PID, whatever happened.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "hubemu"))

HUBFS_BIN = os.environ.get("HUBFS_BIN", os.path.join(ROOT, "build", "tools", "hubfs"))
PY = "/usr/bin/python3"


def eventually(pred, timeout):
    """Polls pred() until it is true or `timeout` seconds have passed; its last value. For what the
    daemon does in the background (stats written every second, verification after a quiet time):
    a fixed sleep fails on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def cdn_bytes(emu, sha=None):
    """Bytes the emulator's CDN sent, of one object (by its sha256) or of all."""
    emu.wait_log(lambda recs: True)
    return sum(r.get("bytes", 0) for r in emu.log("cdn") if sha is None or sha in r.get("path", ""))


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                return h.hexdigest()
            h.update(b)


def dead_endpoint():
    """A 127.0.0.1 URL where nothing listens (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port


def expect_errno(code, fn):
    try:
        fn()
    except OSError as e:
        assert e.errno == code, (e, os.strerror(code))
        return
    raise AssertionError("expected %s" % errno.errorcode[code])


def kernel_offers_passthrough():
    """FUSE passthrough: Linux >= 6.9, and root (the backing-file ioctl needs CAP_SYS_ADMIN)."""
    release = os.uname().release.split(".")
    try:
        major, minor = int(release[0]), int(release[1].split("-")[0])
    except ValueError:
        return False
    return os.geteuid() == 0 and (major, minor) >= (6, 9)


class Fixture:
    """Read access to a generated fixture (tools/hubemu/gen_fixture.py)."""

    def __init__(self, path):
        self.path = path
        with open(os.path.join(path, "repos.json")) as f:
            self.doc = json.load(f)
        self.repos = {(r["type"], r["id"]): r for r in self.doc["repos"]}

    @staticmethod
    def generate(out_dir, preset="test"):
        subprocess.run([PY, os.path.join(ROOT, "tools", "hubemu", "gen_fixture.py"), out_dir, "--preset", preset],
                       check=True, stdout=subprocess.DEVNULL)
        return Fixture(out_dir)

    def repo(self, rid, rtype="model"):
        return self.repos[(rtype, rid)]

    def commit_of(self, rid, rev=None, rtype="model"):
        r = self.repo(rid, rtype)
        refs = r["refs"]
        rev = rev or r.get("default_branch", "main")
        for kind in ("branches", "tags", "converts"):
            if rev in refs.get(kind, {}):
                return refs[kind][rev]
        if rev.startswith("refs/pr/"):
            return refs["pull_requests"][rev[len("refs/pr/"):]]
        for c in r["commits"]:
            if c["id"].startswith(rev.lower()):
                return c["id"]
        raise KeyError(rev)

    def files(self, rid, rev=None, rtype="model"):
        """{path: {size, sha256, oid, lfs}} at a revision."""
        commit = self.commit_of(rid, rev, rtype)
        for c in self.repo(rid, rtype)["commits"]:
            if c["id"] == commit:
                return c["files"]
        raise KeyError(commit)

    def object_path(self, sha256):
        return os.path.join(self.path, "objects", sha256)

    def read(self, meta):
        with open(self.object_path(meta["sha256"]), "rb") as f:
            return f.read()


class Mount:
    """One hubfs mount as a foreground child process."""

    def __init__(self, endpoint, token=None, extra_args=(), cache_dir=None, env=None, mountpoint=None, wrap=()):
        self.tmp = tempfile.mkdtemp(prefix="hubfs-it-")
        self.mountpoint = mountpoint or os.path.join(self.tmp, "mnt")
        if mountpoint is None:
            os.mkdir(self.mountpoint)
        self.cache_dir = cache_dir or os.path.join(self.tmp, "cache")
        self.log_path = os.path.join(self.tmp, "hubfs.log")
        # wrap: a command that runs the daemon (e.g. setpriv, to mount as another user).
        args = [*wrap, HUBFS_BIN, "mount", self.mountpoint, "--foreground", "--endpoint", endpoint,
                "--cache-dir", self.cache_dir, *extra_args]
        child_env = dict(os.environ)
        child_env.pop("HF_TOKEN", None)
        child_env["HF_HOME"] = os.path.join(self.tmp, "hf_home")  # no ambient token file
        child_env["HUBFS_CONFIG"] = os.path.join(self.tmp, "no-config")  # no ambient /etc/hubfs config
        if token:
            token_file = os.path.join(self.tmp, "token")
            with open(token_file, "w") as f:
                f.write(token + "\n")
            args += ["--token-file", token_file]
        child_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=child_env)
        deadline = time.time() + 20
        while not self._mounted():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("hubfs did not mount: " + self.read_log())
            time.sleep(0.02)

    def _listed(self):
        # A hubfs mount on our mount point, live or dead: /proc/mounts lists it (ismount() answers
        # False for a dead one). Paths are octal-escaped there (a space is \040).
        with open("/proc/self/mounts") as f:
            return any(re.sub(r"\\([0-7]{3})", lambda c: chr(int(c.group(1), 8)), l.split()[1]) == self.mountpoint
                       and l.split()[2] == "fuse.hubfs" for l in f)

    def _mounted(self):
        if not self._listed() or self.proc.poll() is not None:
            return False
        try:
            os.statvfs(self.mountpoint)  # a dead mount point left at the same path answers ENOTCONN
            return True
        except PermissionError:  # another user's live mount (no allow_other)
            return True
        except OSError:
            return False

    def path(self, *parts):
        return os.path.join(self.mountpoint, *parts)

    def stats(self):
        """The live metrics of the mount (.hubfs-stats): name -> value, as text."""
        with open(self.path(".hubfs-stats")) as f:
            return dict(line.split()[:2] for line in f if line.strip() and not line.startswith("#"))

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, remove=True):
        if self._listed():  # (os.path.ismount is False for another user's mount: no access)
            subprocess.run(["fusermount3", "-u", self.mountpoint], stderr=subprocess.DEVNULL)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._listed():  # still there, or dead (the daemon was killed): lazy unmount
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], stderr=subprocess.DEVNULL)
        self.log.close()
        rc = self.proc.returncode
        log = self.read_log()
        if remove:
            shutil.rmtree(self.tmp, ignore_errors=True)
        # A sanitizer report anywhere in the daemon's life fails the test that ran it.
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer"):
            if marker in log:
                raise AssertionError("hubfs daemon reported a sanitizer error:\n" + log[-6000:])
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
