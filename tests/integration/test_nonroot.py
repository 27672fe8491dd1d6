"""A mount by an unprivileged user, as the README's "Use it" steps do it (`hubfs mount /hf` as
$USER): no root, so no raised read-ahead and no FUSE passthrough (the kernel refuses it without
CAP_SYS_ADMIN), yet every read is right. Other users, root included, cannot see into the mount
(no allow_other), the cache is the user's own and private, and `hubfs unmount` as the user ends
the mount and the daemon."""
import os
import pwd
import stat
import subprocess
import tempfile

import pytest

from harness import HUBFS_BIN, PY, Mount, eventually

MODEL = "hubfs-test/tiny-model"

if os.geteuid() != 0:
    pytest.skip("needs root: the test runs the daemon as another user", allow_module_level=True)


@pytest.fixture
def user_fuse():
    """/dev/fuse open to every user, as Debian's udev rule leaves it (0666); restored after."""
    mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    if mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", 0o666)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", mode)


def setpriv(pw):
    return ["setpriv", "--reuid", str(pw.pw_uid), "--regid", str(pw.pw_gid), "--clear-groups", "--"]


def as_user(pw, *cmd, timeout=60):
    """cmd run as the user pw (setpriv: no login, no other groups): its CompletedProcess."""
    return subprocess.run([*setpriv(pw), *cmd], capture_output=True, text=True, timeout=timeout)


def user_sha256(pw, path):
    r = as_user(pw, "sha256sum", path)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[0]


def user_stat(pw, mnt, key):
    """A metric of the mount's stats file, read as its user (0 when absent)."""
    r = as_user(pw, "cat", os.path.join(mnt, ".hubfs-stats"))
    assert r.returncode == 0, r.stderr
    return next((float(l.split()[1]) for l in r.stdout.splitlines() if l.split()[:1] == [key]), 0)


def test_an_unprivileged_user_mounts_reads_and_unmounts(emu, fixture, user_fuse):
    pw = pwd.getpwnam("nobody")
    home = tempfile.mkdtemp(prefix="hubfs-user-")
    try:
        os.chmod(home, 0o755)
        mnt, cache = os.path.join(home, "hf"), os.path.join(home, "cache")
        os.mkdir(mnt)
        os.chown(mnt, pw.pw_uid, pw.pw_gid)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        m = Mount(emu.hub_url, cache_dir=cache, mountpoint=mnt, wrap=setpriv(pw))
        try:
            # The mount is the user's, and closed to everyone else: root gets EACCES.
            with pytest.raises(PermissionError):
                os.listdir(mnt)
            repo = os.path.join(mnt, *MODEL.split("/"))
            r = as_user(pw, "ls", "-A", repo)
            assert r.returncode == 0, r.stderr
            files = fixture.files(MODEL)
            assert set(r.stdout.split()) == {p.split("/")[0] for p in files}
            for name in ("model.safetensors", "config.json", "tokenizer.json"):
                assert user_sha256(pw, os.path.join(repo, name)) == files[name]["sha256"], name
            # A re-read once the cache has settled (the file verified whole: no passthrough for
            # this user, so the daemon serves it) is still right.
            assert eventually(lambda: user_stat(pw, mnt, "cache.verify.ok") >= 1, 30), m.read_log()
            r = as_user(pw, PY, "-c", "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
                        os.path.join(repo, "model.safetensors"))
            assert r.stdout.strip() == files["model.safetensors"]["sha256"], r.stderr
            assert user_stat(pw, mnt, "fuse.open.passthrough") == 0
            # The cache is the user's and private to it.
            entries = [os.path.join(d, n) for d, ds, fs in os.walk(cache) for n in ds + fs]
            assert any(stat.S_ISREG(os.stat(e).st_mode) for e in entries)
            for e in [cache] + entries:
                st = os.stat(e)
                assert st.st_uid == pw.pw_uid, e
                assert stat.S_IMODE(st.st_mode) & 0o077 == 0, (e, oct(st.st_mode))
            # `hubfs unmount` as the user ends the mount and the daemon.
            r = as_user(pw, HUBFS_BIN, "unmount", mnt)
            assert r.returncode == 0, r.stderr
            assert m.proc.wait(timeout=10) == 0
            assert not m._listed()
        finally:
            log = m.read_log()
            m.stop()
        assert "error" not in log.lower(), log
    finally:
        subprocess.run(["rm", "-rf", home])
