"""hubfs mounts the Hub: listings, bytes, revisions, errors and read-only semantics, checked through
a real FUSE mount against the emulator, byte for byte against the fixture."""
import errno
import hashlib
import mmap
import os
import random
import threading
import time

import pytest

from harness import sha256_file

MODEL = "hubfs-test/tiny-model"
SEED = int(os.environ.get("HUBFS_TEST_SEED", random.randrange(1 << 30)))


def walk(root):
    """{relative file path: size} and the set of relative dirs under root."""
    files, dirs = {}, set()
    for d, subdirs, names in os.walk(root):
        rel = os.path.relpath(d, root)
        for s in subdirs:
            dirs.add(os.path.normpath(os.path.join(rel, s)))
        for n in names:
            files[os.path.normpath(os.path.join(rel, n))] = os.stat(os.path.join(d, n)).st_size
    return files, dirs


def repo_dir(mnt, rid, rtype="model", rev=None):
    prefix = {"model": (), "dataset": ("datasets",), "space": ("spaces",)}[rtype]
    name = rid if rev is None else rid + "@" + rev.replace("/", "%2F")
    return mnt.path(*prefix, *name.split("/"))


PUBLIC = [("model", MODEL), ("model", "openai-community/gpt2"), ("dataset", "hubfs-test/big-dataset"),
          ("space", "hubfs-test/demo-space"), ("model", "hubfs-test/another-model")]


@pytest.mark.parametrize("rtype,rid", PUBLIC)
def test_listing_equals_fixture(mnt, fixture, rtype, rid):
    files, dirs = walk(repo_dir(mnt, rid, rtype))
    expected = fixture.files(rid, rtype=rtype)
    assert files == {p: m["size"] for p, m in expected.items()}
    implied = {os.path.dirname(p) for p in expected} - {""}
    closure = set()
    for d in implied:
        while d:
            closure.add(d)
            d = os.path.dirname(d)
    assert dirs == closure


@pytest.mark.parametrize("rtype,rid", PUBLIC)
def test_sha256_of_every_file(mnt, fixture, rtype, rid):
    root = repo_dir(mnt, rid, rtype)
    for path, meta in fixture.files(rid, rtype=rtype).items():
        assert sha256_file(os.path.join(root, path)) == meta["sha256"], path


def test_listing_carries_attributes(mnt, fixture):
    """A repo directory's listing carries each entry's inode and attributes (READDIRPLUS): stat-ing
    and opening every listed file afterwards sends no LOOKUP, with the fixture's sizes and bytes;
    entries above a repo (orgs, repos) are listed without. When the kernel forgets the entries,
    the daemon forgets them too (each listed entry counted one lookup, no more, no less)."""
    rid = "hubfs-test/big-dataset"
    expected = fixture.files(rid, rtype="dataset")
    d = os.path.join(repo_dir(mnt, rid, "dataset"), "data")
    names = sorted(os.listdir(d))
    assert names == sorted(os.path.basename(p) for p in expected if p.startswith("data/"))
    before = mnt.stats()
    for n in names:
        assert os.stat(os.path.join(d, n)).st_size == expected["data/" + n]["size"], n
    for n in names[:50]:
        with open(os.path.join(d, n), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected["data/" + n]["sha256"], n
    after = mnt.stats()
    # Not one per file (1500 without READDIRPLUS). A few may come from elsewhere: .hubfs-stats is
    # looked up on every open (no entry timeout), and the repo directory's entry expires after the
    # revision TTL (60 s), which may fall inside this test.
    assert int(after.get("fuse.lookups", 0)) - int(before.get("fuse.lookups", 0)) <= 5
    assert int(after["fuse.readdirplus.entries"]) >= len(names)
    # Listing orgs is local, looking one up is not: the datasets directory lists without attributes.
    plus = int(mnt.stats()["fuse.readdirplus.entries"])
    assert "hubfs-test" in os.listdir(mnt.path("datasets"))
    assert int(mnt.stats()["fuse.readdirplus.entries"]) == plus
    # Forgotten by the kernel (dentries and inodes dropped): the daemon's inode count falls back.
    listed = os.statvfs(mnt.mountpoint).f_files
    assert listed >= len(names)
    deadline = time.monotonic() + 10
    while True:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        now = os.statvfs(mnt.mountpoint).f_files
        if now <= listed - len(names) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert now <= listed - len(names), (listed, now)
    # And found again, listed or looked up.
    assert os.stat(os.path.join(d, names[7])).st_size == expected["data/" + names[7]]["size"]
    assert len(os.listdir(d)) == len(names)


def test_modes_sizes_mtimes(mnt, fixture):
    root = repo_dir(mnt, MODEL)
    st = os.stat(os.path.join(root, "config.json"))
    assert oct(st.st_mode & 0o7777) == "0o444"
    assert st.st_size == fixture.files(MODEL)["config.json"]["size"]
    assert st.st_mtime > 1.5e9  # the Hub's lastModified, not the epoch
    assert oct(os.stat(root).st_mode & 0o7777) == "0o555"
    assert oct(os.stat(mnt.mountpoint).st_mode & 0o7777) == "0o555"
    sv = os.statvfs(mnt.mountpoint)
    assert sv.f_namemax == 255 and sv.f_bsize > 0
    assert sv.f_blocks * sv.f_frsize == 20 << 30  # the cache cap (--cache-size default 20G)
    assert sv.f_bavail == 0  # read-only: nothing can be written


def test_random_preads(mnt, fixture):
    print("seed", SEED)
    rng = random.Random(SEED)
    meta = fixture.files(MODEL)["model.safetensors"]
    want = fixture.read(meta)
    fd = os.open(os.path.join(repo_dir(mnt, MODEL), "model.safetensors"), os.O_RDONLY)
    try:
        for _ in range(500):
            off = rng.randrange(0, len(want) + 100)
            n = rng.choice([1, 7, 4096, 65536, 1 << 20, 3 << 20, rng.randrange(1, 5 << 20)])
            assert os.pread(fd, n, off) == want[off:off + n], (off, n)
    finally:
        os.close(fd)


def test_mmap_reads(mnt, fixture):
    rng = random.Random(SEED + 1)
    meta = fixture.files(MODEL)["model.safetensors"]
    want = fixture.read(meta)
    with open(os.path.join(repo_dir(mnt, MODEL), "model.safetensors"), "rb") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            assert len(m) == len(want)
            for _ in range(200):
                off = rng.randrange(0, len(want))
                n = rng.randrange(1, 1 << 20)
                assert m[off:off + n] == want[off:off + n]
            assert hashlib.sha256(m).hexdigest() == meta["sha256"]


def run_in_threads(fn, n, timeout=60):
    """fn(0) ... fn(n - 1), each in its own thread, all at once; returns once they have ended."""
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a reader thread did not finish in %d s" % timeout


def test_concurrent_readers_one_file(mnt, fixture):
    meta = fixture.files("openai-community/gpt2")["model.safetensors"]
    want = fixture.read(meta)
    path = os.path.join(repo_dir(mnt, "openai-community/gpt2"), "model.safetensors")
    errors = []

    def reader(i):
        fd = os.open(path, os.O_RDONLY)
        try:
            chunk = len(want) // 16 + 1
            off = i * chunk
            got = os.pread(fd, chunk, off)
            if got != want[off:off + chunk]:
                errors.append(i)
        finally:
            os.close(fd)

    run_in_threads(reader, 16)
    assert not errors


def test_o_direct_readers(mnt, fixture):
    """fastsafetensors' pattern: 16 threads, each opening the file O_DIRECT and reading its own
    aligned part into page-aligned buffers."""
    meta = fixture.files(MODEL)["model.safetensors"]  # 21 MB: several blocks, parts across their boundaries
    want = fixture.read(meta)
    path = os.path.join(repo_dir(mnt, MODEL), "model.safetensors")
    part = -(-len(want) // 16 // 4096) * 4096
    got = [b""] * 16
    errors = []

    def reader(i):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 256 << 10)
            try:
                out, off = [], i * part
                while off < min(len(want), (i + 1) * part):
                    n = os.preadv(fd, [buf], off)
                    if n <= 0:
                        break
                    n = min(n, (i + 1) * part - off)
                    out.append(buf[:n])
                    off += n
                got[i] = b"".join(out)
            finally:
                buf.close()
                os.close(fd)
        except OSError as e:
            errors.append((i, e))

    run_in_threads(reader, 16)
    assert not errors
    assert hashlib.sha256(b"".join(got)).hexdigest() == meta["sha256"]


def test_forked_workers_sharing_one_fd(mnt, fixture, tmp_path):
    """Forked data-loader workers that inherit one fd and read interleaved 1 MiB slices of it."""
    meta = fixture.files(MODEL)["model.safetensors"]
    want = fixture.read(meta)
    fd = os.open(os.path.join(repo_dir(mnt, MODEL), "model.safetensors"), os.O_RDONLY)
    step, workers, pids = 1 << 20, 4, []
    try:
        for w in range(workers):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with open(tmp_path / str(w), "wb") as out:
                        for off in range(w * step, len(want), workers * step):
                            out.write(os.pread(fd, step, off))
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        os.close(fd)
    assert codes == [0] * workers
    parts = [(tmp_path / str(w)).read_bytes() for w in range(workers)]
    for w in range(workers):
        assert parts[w] == b"".join(want[off:off + step] for off in range(w * step, len(want), workers * step))


@pytest.mark.parametrize("rev", ["main", "dev", "v1.0", "refs/pr/1"])
def test_revision_forms(mnt, fixture, rev):
    files, _ = walk(repo_dir(mnt, MODEL, rev=rev))
    expected = fixture.files(MODEL, rev)
    assert files == {p: m["size"] for p, m in expected.items()}
    for path, meta in expected.items():
        assert sha256_file(os.path.join(repo_dir(mnt, MODEL, rev=rev), path)) == meta["sha256"]


def test_commit_revisions(mnt, fixture):
    commit = fixture.commit_of(MODEL, "v1.0")
    expected = fixture.files(MODEL, "v1.0")
    for rev in (commit, commit[:7], commit[:12]):
        files, _ = walk(repo_dir(mnt, MODEL, rev=rev))
        assert files == {p: m["size"] for p, m in expected.items()}, rev
    # The tag's content differs from main's somewhere: the mount must show each as it is.
    main = fixture.files(MODEL)
    differing = [p for p in expected if p in main and main[p]["sha256"] != expected[p]["sha256"]]
    assert differing, "fixture should change a file between v1.0 and main"
    p = differing[0]
    assert sha256_file(os.path.join(repo_dir(mnt, MODEL, rev=commit), p)) == expected[p]["sha256"]
    assert sha256_file(os.path.join(repo_dir(mnt, MODEL), p)) == main[p]["sha256"]


def test_legacy_id_is_symlink(mnt, fixture):
    link = mnt.path("gpt2")
    assert os.path.islink(link)
    assert os.readlink(link) == "openai-community/gpt2"
    assert sha256_file(os.path.join(link, "config.json")) == \
        fixture.files("openai-community/gpt2")["config.json"]["sha256"]


def test_org_listing(mnt, fixture):
    names = set(os.listdir(mnt.path("hubfs-test")))
    public_models = {r["id"].split("/")[1] for r in fixture.doc["repos"]
                     if r["type"] == "model" and r["id"].startswith("hubfs-test/") and not r["private"]}
    assert public_models <= names
    ds = set(os.listdir(mnt.path("datasets", "hubfs-test")))
    assert "big-dataset" in ds


def test_root_lists_looked_up_names(mnt):
    os.stat(repo_dir(mnt, MODEL))
    names = os.listdir(mnt.mountpoint)
    assert "datasets" in names and "spaces" in names and "hubfs-test" in names


def test_large_directory_lists_completely(mnt, fixture):
    expected = sorted(os.path.basename(p) for p in fixture.files("hubfs-test/big-dataset", rtype="dataset")
                      if p.startswith("data/"))
    assert len(expected) > 1000
    got = sorted(os.listdir(os.path.join(repo_dir(mnt, "hubfs-test/big-dataset", "dataset"), "data")))
    assert got == expected


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, (e.value, os.strerror(code))


def test_missing_things_are_enoent(mnt):
    expect_errno(errno.ENOENT, os.stat, mnt.path("hubfs-test", "no-such-repo"))
    expect_errno(errno.ENOENT, os.stat, mnt.path("hubfs-test", "tiny-model@no-such-branch"))
    expect_errno(errno.ENOENT, os.stat, os.path.join(repo_dir(mnt, MODEL), "no-such-file"))
    expect_errno(errno.ENOENT, os.stat, os.path.join(repo_dir(mnt, MODEL), "a", "nope", "deeper"))
    expect_errno(errno.ENOENT, os.stat, mnt.path("bad--org"))
    expect_errno(errno.ENOENT, os.stat, mnt.path("hubfs-test", "x@"))


def test_private_repo(mnt, anon, fixture, emu):
    rid = "hubfs-test/private-model"
    # Alice can read it.
    for path, meta in fixture.files(rid).items():
        assert sha256_file(os.path.join(repo_dir(mnt, rid), path)) == meta["sha256"]
    # Without a token the Hub says RepoNotFound: ENOENT, like a repo that does not exist.
    expect_errno(errno.ENOENT, os.stat, repo_dir(anon, rid))


def test_login_rotation_and_logout_on_a_live_mount(emu, fixture):
    """A mount made before any login (a boot mount) follows its token file: `hf auth login`,
    a rotated token and `hf auth logout` count from the next Hub request, with no remount."""
    from harness import Mount
    rid, gated = "hubfs-test/private-model", "hubfs-test/gated-model"
    recheck = 1.5  # the daemon looks at the file at most once a second

    def hub_auth_since(n):
        emu.wait_log(lambda recs: True)
        return [r["auth"] for r in emu.log()[n:] if r["origin"] == "hub"]

    with Mount(emu.hub_url, extra_args=["--log-level", "info"]) as m:
        hf_home = os.path.join(m.tmp, "hf_home")  # the mount's $HF_HOME: no token file yet
        os.makedirs(hf_home, exist_ok=True)
        token_path = os.path.join(hf_home, "token")
        emu.clear_log()
        expect_errno(errno.ENOENT, os.stat, repo_dir(m, rid))
        assert hub_auth_since(0) and not any(hub_auth_since(0))

        # Bob logs in: his token is sent from now on, and he sees no more than before.
        with open(token_path, "w") as f:
            f.write("hf_bob\n")
        time.sleep(recheck)
        n = len(emu.log())
        expect_errno(errno.ENOENT, os.stat, repo_dir(m, rid))
        expect_errno(errno.EACCES, lambda p: open(p, "rb").read(), os.path.join(repo_dir(m, gated), "config.json"))
        assert hub_auth_since(n) and all(hub_auth_since(n))

        # The token is rotated to Alice's (replaced by rename): the private repo appears.
        with open(token_path + ".new", "w") as f:
            f.write("hf_alice\n")
        os.rename(token_path + ".new", token_path)
        time.sleep(recheck)
        for path, meta in fixture.files(rid).items():
            assert sha256_file(os.path.join(repo_dir(m, rid), path)) == meta["sha256"]
        meta = fixture.files(gated)["config.json"]
        assert sha256_file(os.path.join(repo_dir(m, gated), "config.json")) == meta["sha256"]

        # Logout: no token is sent, and content not read before is refused again.
        os.unlink(token_path)
        time.sleep(recheck)
        n = len(emu.log())
        expect_errno(errno.EACCES, lambda p: open(p, "rb").read(),
                     os.path.join(repo_dir(m, gated), "model.safetensors"))
        assert hub_auth_since(n) and not any(hub_auth_since(n))
        log = m.read_log()
    assert log.count("changed: a new token is in use") == 2, log
    assert "is gone: no token from now on" in log, log
    assert "hf_alice" not in log and "hf_bob" not in log
    assert not any(r["auth"] for r in emu.log() if r["origin"] == "cdn")


def test_gated_repo(mnt, anon, fixture):
    rid = "hubfs-test/gated-model"
    # Metadata and listings are open to everyone...
    files, _ = walk(repo_dir(anon, rid))
    assert files == {p: m["size"] for p, m in fixture.files(rid).items()}
    # ...content is not.
    expect_errno(errno.EACCES, lambda p: open(p, "rb").read(), os.path.join(repo_dir(anon, rid), "model.safetensors"))
    expect_errno(errno.EACCES, lambda p: open(p, "rb").read(), os.path.join(repo_dir(anon, rid), "config.json"))
    # Alice is approved.
    meta = fixture.files(rid)["model.safetensors"]
    assert sha256_file(os.path.join(repo_dir(mnt, rid), "model.safetensors")) == meta["sha256"]


def test_disabled_repo_is_eacces(mnt):
    expect_errno(errno.EACCES, os.listdir, mnt.path("hubfs-test", "disabled-model"))


WRITE_OPS = {
    "open_write": lambda p: os.open(os.path.join(p, "config.json"), os.O_WRONLY),
    "open_rdwr": lambda p: os.open(os.path.join(p, "config.json"), os.O_RDWR),
    "create": lambda p: os.open(os.path.join(p, "new.txt"), os.O_WRONLY | os.O_CREAT, 0o644),
    "truncate": lambda p: os.truncate(os.path.join(p, "config.json"), 0),
    "mkdir": lambda p: os.mkdir(os.path.join(p, "newdir")),
    "rmdir": lambda p: os.rmdir(os.path.join(p, "a")),
    "unlink": lambda p: os.unlink(os.path.join(p, "config.json")),
    "rename": lambda p: os.rename(os.path.join(p, "config.json"), os.path.join(p, "c2.json")),
    "symlink": lambda p: os.symlink("config.json", os.path.join(p, "ln")),
    "link": lambda p: os.link(os.path.join(p, "config.json"), os.path.join(p, "hard")),
    "chmod": lambda p: os.chmod(os.path.join(p, "config.json"), 0o644),
    "utime": lambda p: os.utime(os.path.join(p, "config.json"), (1, 1)),
    "setxattr": lambda p: os.setxattr(os.path.join(p, "config.json"), "user.x", b"1"),
    "mkdir_top": lambda p: os.mkdir(os.path.join(os.path.dirname(os.path.dirname(p)), "not--an-org")),
}


@pytest.mark.parametrize("op", sorted(WRITE_OPS))
def test_writes_fail_with_erofs(mnt, fixture, op):
    root = repo_dir(mnt, MODEL)
    expect_errno(errno.EROFS, WRITE_OPS[op], root)
    files, _ = walk(root)
    assert files == {p: m["size"] for p, m in fixture.files(MODEL).items()}
    assert sha256_file(os.path.join(root, "config.json")) == fixture.files(MODEL)["config.json"]["sha256"]


def test_token_never_reaches_cdn(emu, fixture):
    from harness import Mount
    emu.clear_log()
    with Mount(emu.hub_url, token="hf_alice") as m:
        for rid in ("hubfs-test/private-model", MODEL):
            meta = fixture.files(rid)["model.safetensors"]
            assert sha256_file(os.path.join(repo_dir(m, rid), "model.safetensors")) == meta["sha256"]
    log = emu.log()
    cdn = [r for r in log if r["origin"] == "cdn"]
    hub = [r for r in log if r["origin"] == "hub"]
    assert cdn, "LFS bytes should come from the CDN origin"
    assert not any(r["auth"] for r in cdn)
    assert all(r["auth"] for r in hub)


def test_listing_costs_one_paginated_tree_listing(emu, fixture):
    from harness import Mount
    emu.clear_log()
    with Mount(emu.hub_url) as m:
        files, _ = walk(repo_dir(m, "hubfs-test/big-dataset", "dataset"))
        assert len(files) == len(fixture.files("hubfs-test/big-dataset", rtype="dataset"))
    trees = [r for r in emu.log() if r["origin"] == "hub" and "/tree/" in r["path"]]
    n = len(fixture.files("hubfs-test/big-dataset", rtype="dataset"))
    assert 1 <= len(trees) <= 1 + (n + 10) // 1000 + 1
    resolves = [r for r in emu.log() if "/resolve/" in r["path"]]
    assert not resolves, "listing must not touch file contents"


def test_default_branch_is_reresolved_and_open_files_keep_their_commit(emu, fixture):
    from harness import Mount
    head = fixture.commit_of(MODEL, "main")
    old = fixture.commit_of(MODEL, "v1.0")
    main_files, old_files = fixture.files(MODEL, "main"), fixture.files(MODEL, "v1.0")
    changed = next(p for p in old_files if p in main_files and old_files[p]["sha256"] != main_files[p]["sha256"])
    only_old = next(p for p in old_files if p not in main_files)
    try:
        with Mount(emu.hub_url, extra_args=["--revision-ttl", "1"]) as m:
            root = repo_dir(m, MODEL)
            assert os.getxattr(root, "user.hf.commit").decode() == head
            assert not os.path.exists(os.path.join(root, only_old))
            held = open(os.path.join(root, changed), "rb")  # opened at the head commit
            emu.move_branch(MODEL, "main", old)             # a push lands
            time.sleep(2.2)
            # After the TTL the name resolves to the new commit...
            assert os.getxattr(root, "user.hf.commit").decode() == old
            assert sha256_file(os.path.join(root, changed)) == old_files[changed]["sha256"]
            assert sha256_file(os.path.join(root, only_old)) == old_files[only_old]["sha256"]
            # ...while the file opened before keeps reading the commit it was opened at.
            assert hashlib.sha256(held.read()).hexdigest() == main_files[changed]["sha256"]
            held.close()
            # Commit-pinned names never move.
            assert os.getxattr(repo_dir(m, MODEL, rev=head), "user.hf.commit").decode() == head
    finally:
        emu.move_branch(MODEL, "main", head)


def test_xattrs_carry_hub_metadata(mnt, fixture):
    root = repo_dir(mnt, MODEL)
    meta = fixture.files(MODEL)["model.safetensors"]
    f = os.path.join(root, "model.safetensors")
    assert os.getxattr(f, "user.hf.sha256").decode() == meta["sha256"]
    assert os.getxattr(f, "user.hf.etag").decode() == meta["sha256"]
    assert os.getxattr(f, "user.hf.size").decode() == str(meta["size"])
    assert os.getxattr(f, "user.hf.lfs").decode() == "1"
    assert os.getxattr(f, "user.hf.commit").decode() == fixture.commit_of(MODEL)
    small = os.path.join(root, "config.json")
    assert os.getxattr(small, "user.hf.lfs").decode() == "0"
    assert os.getxattr(small, "user.hf.etag").decode() == fixture.files(MODEL)["config.json"]["oid"]
    expect_errno(errno.ENODATA, os.getxattr, small, "user.hf.sha256")
    assert "user.hf.sha256" in os.listxattr(f) and "user.hf.sha256" not in os.listxattr(small)


def test_cached_xattr_counts_the_bytes_the_cache_holds(emu, fixture):
    """user.hf.cached: how much of a file is in the cache, e.g. before going offline."""
    from harness import Mount
    meta = fixture.files(MODEL)["model.safetensors"]
    with Mount(emu.hub_url, extra_args=["--block-size-mib", "1"]) as m:
        f = os.path.join(repo_dir(m, MODEL), "model.safetensors")
        assert "user.hf.cached" in os.listxattr(f)
        assert os.getxattr(f, "user.hf.cached") == b"0"  # asked before any open: nothing fetched
        with open(f, "rb") as fh:
            fh.seek(meta["size"] - 10)
            fh.read()  # the last block only (and what prefetch fetched from the start)
        part = int(os.getxattr(f, "user.hf.cached"))
        assert 10 <= part < meta["size"], part
        assert sha256_file(f) == meta["sha256"]
        assert int(os.getxattr(f, "user.hf.cached")) == meta["size"]
        empty = os.path.join(repo_dir(m, MODEL), "empty.txt")
        assert os.getxattr(empty, "user.hf.cached") == b"0"


def test_stats_file_is_live(mnt):
    # A counter appears once first used: read something first, so the test does not depend on
    # the tests run before it on this module's mount.
    sha256_file(os.path.join(repo_dir(mnt, MODEL), "config.json"))
    with open(mnt.path(".hubfs-stats")) as f:
        before = f.read()
    assert "endpoint: " in before and "fs.reads " in before
    sha256_file(os.path.join(repo_dir(mnt, MODEL), "README.md"))
    with open(mnt.path(".hubfs-stats")) as f:
        after = f.read()
    count = lambda text, key: int(next(l.split()[1] for l in text.splitlines() if l.startswith(key + " ")))
    assert count(after, "fs.reads") > count(before, "fs.reads")
