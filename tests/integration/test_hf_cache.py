"""Files huggingface_hub already downloaded ($HF_HUB_CACHE) are read from there, not fetched again:
right bytes by SHA-256 with no download request at the origin, a damaged or short copy never served
(the file comes from the origin instead), nothing written into huggingface_hub's cache, and each
copy hashed once, across mounts."""
import errno
import mmap
import os
import shutil
import subprocess

import pytest

from harness import HUBFS_BIN, Mount, dead_endpoint, eventually, expect_errno, kernel_offers_passthrough, sha256_file

MODEL = "hubfs-test/tiny-model"
ORG, NAME = MODEL.split("/")


def populate(fixture, hf_root, rid=MODEL, symlinks=True, only=None):
    """huggingface_hub's layout for every file of `rid` at main (or those in `only`): blobs named by
    etag (LFS sha256, else git blob sha1), snapshot entries as relative symlinks to them (or, like
    `hf download` without symlinks, the file itself in the snapshot), refs/main. Returns
    {path: file in huggingface_hub's cache}."""
    repo = os.path.join(hf_root, "models--" + rid.replace("/", "--"))
    commit = fixture.commit_of(rid)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)
    out = {}
    for path, meta in fixture.files(rid).items():
        if only is not None and path not in only:
            continue
        etag = meta["sha256"] if meta["lfs"] else meta["oid"]
        snap = os.path.join(repo, "snapshots", commit, path)
        os.makedirs(os.path.dirname(snap), exist_ok=True)
        if symlinks:
            blob = os.path.join(repo, "blobs", etag)
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            shutil.copyfile(fixture.object_path(meta["sha256"]), blob)
            os.symlink(os.path.relpath(blob, os.path.dirname(snap)), snap)
            out[path] = blob
        else:
            shutil.copyfile(fixture.object_path(meta["sha256"]), snap)
            out[path] = snap
    return out


def tree_state(root):
    """Every entry under root: (relative path, type, size, mtime_ns, mode)."""
    out = []
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out.append((os.path.relpath(p, root), st.st_mode, st.st_size, st.st_mtime_ns))
    return sorted(out)


def downloads(emu):
    """Requests that fetched file bytes: resolve or raw at the Hub, or any CDN request."""
    emu.wait_log(lambda recs: True)
    return [r for r in emu.log() if r["origin"] == "cdn" or "/resolve/" in r["path"] or "/raw/" in r["path"]]


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "daemon"])
def test_downloaded_files_are_read_from_huggingface_hubs_cache(emu, fixture, tmp_path, passthrough):
    hf = str(tmp_path / "hf" / "hub")
    copies = populate(fixture, hf)
    before = tree_state(hf)
    files = fixture.files(MODEL)
    emu.clear_log()
    args = ["--hf-cache", hf] + ([] if passthrough else ["--no-passthrough"])
    with Mount(emu.hub_url, extra_args=args) as m:
        root = m.path(ORG, NAME)
        for path, meta in files.items():
            assert sha256_file(os.path.join(root, path)) == meta["sha256"], path
        # mmap, as safetensors loads do
        with open(os.path.join(root, "model.safetensors"), "rb") as f:
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
                assert mm[-4096:] == fixture.read(files["model.safetensors"])[-4096:]
        assert downloads(emu) == []
        # All of it is local: what `getfattr -n user.hf.cached` says before going offline.
        big = os.path.join(root, "model.safetensors")
        assert int(os.getxattr(big, "user.hf.cached")) == files["model.safetensors"]["size"]
        stats = m.stats()
        nonempty = sum(1 for meta in files.values() if meta["size"] > 0)
        assert int(stats["hf_cache.copies_used"]) >= nonempty
        assert int(stats["hf_cache.bytes_hashed"]) == sum(meta["size"] for meta in files.values())
        total = sum(meta["size"] for meta in files.values())
        if not passthrough:  # the daemon read every byte from the copies
            assert int(stats["cache.local.bytes"]) >= total
        elif kernel_offers_passthrough():  # the kernel read the large file from its copy directly
            assert int(stats["fuse.open.passthrough"]) >= 2
            assert int(stats.get("cache.local.bytes", 0)) < total - files["model.safetensors"]["size"] // 2
        assert int(stats.get("cache.origin_bytes", 0)) == 0
        log = m.read_log()
        assert "using huggingface_hub's copy %s" % copies["model.safetensors"] in log
        r = subprocess.run([HUBFS_BIN, "status"], capture_output=True, text=True, timeout=30)
        line = [l for l in r.stdout.splitlines() if "hf cache:" in l]
        assert line and "0 damaged copies refused" in line[0], r.stdout
    # Read, never written: not a byte, a name, a mode or a time changed.
    assert tree_state(hf) == before


def test_a_damaged_or_short_copy_is_never_served(emu, fixture, tmp_path):
    hf = str(tmp_path / "hub")
    copies = populate(fixture, hf, only={"model.safetensors", "tokenizer.json", "config.json"})
    files = fixture.files(MODEL)
    # One byte flipped in the middle (the right size: only its hash can tell), and a copy cut short
    # (a download a full disk ended).
    with open(copies["model.safetensors"], "r+b") as f:
        f.seek(files["model.safetensors"]["size"] // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x55]))
    with open(copies["tokenizer.json"], "r+b") as f:
        f.truncate(files["tokenizer.json"]["size"] - 1)
    before = tree_state(hf)
    emu.clear_log()
    with Mount(emu.hub_url, extra_args=["--hf-cache", hf]) as m:
        root = m.path(ORG, NAME)
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            assert sha256_file(os.path.join(root, name)) == files[name]["sha256"], name
        fetched = {r["path"] for r in downloads(emu)}
        # The two bad copies came from the origin; the sound one did not.
        assert any(files["model.safetensors"]["sha256"] in p for p in fetched), fetched
        assert any(files["tokenizer.json"]["sha256"] in p for p in fetched), fetched
        assert not any(p.endswith("/config.json") for p in fetched), fetched
        stats = m.stats()
        assert int(stats["hf_cache.copies_mismatched"]) == 1
        assert "%s does not hash to its name" % copies["model.safetensors"] in m.read_log()
    assert tree_state(hf) == before  # the damaged copies are left as they were


def test_a_copy_is_hashed_once_and_again_when_it_changes(emu, fixture, tmp_path):
    hf = str(tmp_path / "hub")
    # Downloaded without symlinks: the files sit in the snapshot itself.
    copies = populate(fixture, hf, symlinks=False, only={"model.safetensors", "onnx/model.onnx"})
    files = fixture.files(MODEL)
    cache = str(tmp_path / "cache")
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache, extra_args=["--hf-cache", hf]) as m:
        for name in ("model.safetensors", "onnx/model.onnx"):
            assert sha256_file(m.path(ORG, NAME, name)) == files[name]["sha256"]
        assert int(m.stats()["hf_cache.bytes_hashed"]) == files["model.safetensors"]["size"] + \
            files["onnx/model.onnx"]["size"]
    assert downloads(emu) == []
    # A remount with the same cache directory knows both copies are sound: nothing is hashed again.
    with Mount(emu.hub_url, cache_dir=cache, extra_args=["--hf-cache", hf]) as m:
        for name in ("model.safetensors", "onnx/model.onnx"):
            assert sha256_file(m.path(ORG, NAME, name)) == files[name]["sha256"]
        assert int(m.stats().get("hf_cache.bytes_hashed", 0)) == 0
        assert int(m.stats()["hf_cache.copies_used"]) >= 2
    # Rewritten in place with other bytes of the same size: a new copy, hashed again, and refused.
    size = files["onnx/model.onnx"]["size"]
    with open(copies["onnx/model.onnx"], "r+b") as f:
        f.write(b"\0" * 16)
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache, extra_args=["--hf-cache", hf]) as m:
        assert sha256_file(m.path(ORG, NAME, "onnx/model.onnx")) == files["onnx/model.onnx"]["sha256"]
        stats = m.stats()
        assert int(stats["hf_cache.bytes_hashed"]) == size
        assert int(stats["hf_cache.copies_mismatched"]) == 1
    assert any(files["onnx/model.onnx"]["sha256"] in r["path"] for r in downloads(emu))


def test_without_a_copy_or_with_none_the_origin_serves(emu, fixture, tmp_path):
    hf = str(tmp_path / "hub")
    populate(fixture, hf, only={"config.json"})
    files = fixture.files(MODEL)
    emu.clear_log()
    # --hf-cache none: not even a sound copy is looked at.
    with Mount(emu.hub_url, extra_args=["--hf-cache", "none"]) as m:
        assert sha256_file(m.path(ORG, NAME, "config.json")) == files["config.json"]["sha256"]
        assert "hf_cache.copies_used" not in m.stats()
    assert any(r["path"].endswith("/config.json") for r in downloads(emu))
    # The default is huggingface_hub's own: $HF_HOME/hub here.
    emu.clear_log()
    home = str(tmp_path / "hf_home")
    populate(fixture, os.path.join(home, "hub"), only={"config.json"})
    with Mount(emu.hub_url, env={"HF_HOME": home}) as m:
        assert sha256_file(m.path(ORG, NAME, "config.json")) == files["config.json"]["sha256"]
        assert sha256_file(m.path(ORG, NAME, "README.md")) == files["README.md"]["sha256"]
    fetched = [r["path"] for r in downloads(emu)]
    assert not any(p.endswith("/config.json") for p in fetched), fetched
    assert any(p.endswith("/README.md") for p in fetched), fetched


def test_without_the_hub_a_model_only_huggingface_hub_downloaded_is_served(emu, fixture, tmp_path):
    """An air-gapped machine (or a Hub outage) where models were downloaded with huggingface_hub
    but never through hubfs: its refs name the commit, its snapshot lists the files downloaded,
    and those files are read (verified) from it."""
    hf = str(tmp_path / "hub")
    files = fixture.files(MODEL)
    have = {"model.safetensors", "config.json", "a/b/c/deep.txt", "docs/hello wörld ü.txt"}
    populate(fixture, hf, only=have)
    commit = fixture.commit_of(MODEL)
    before = tree_state(hf)
    for endpoint, args in ((dead_endpoint(), []), (emu.hub_url, ["--offline"])):
        emu.clear_log()
        with Mount(endpoint, extra_args=["--hf-cache", hf, *args]) as m:
            assert os.listdir(m.path(ORG)) == [NAME]
            root = m.path(ORG, NAME)
            listed = {os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns}
            assert listed == have
            for path in have:
                assert os.stat(os.path.join(root, path)).st_size == files[path]["size"]
                assert sha256_file(os.path.join(root, path)) == files[path]["sha256"], path
            assert os.getxattr(root, "user.hf.commit").decode() == commit
            # By its commit too; a file it did not download is not there; another repo is EIO.
            assert sha256_file(m.path(ORG, NAME + "@" + commit, "config.json")) == files["config.json"]["sha256"]
            expect_errno(errno.ENOENT, lambda: os.stat(os.path.join(root, "tokenizer.json")))
            expect_errno(errno.EIO, lambda: os.listdir(m.path(ORG, "another-model")))
            assert int(m.stats()["fs.served_offline"]) >= 2
            assert "named in huggingface_hub's cache" in m.read_log()
        if args:
            assert emu.log() == []  # --offline: not one request
    assert tree_state(hf) == before


def test_the_first_shard_is_hashed_while_a_loader_reads_the_config(emu, fixture, tmp_path):
    """transformers reads config.json, builds the model, then opens the shards: the first shard's
    copy is hashed in that time, so its open does not wait for the hash."""
    hf = str(tmp_path / "hub")
    populate(fixture, hf, only={"config.json", "model.safetensors"})
    files = fixture.files(MODEL)
    with Mount(emu.hub_url, extra_args=["--hf-cache", hf]) as m:
        root = m.path(ORG, NAME)
        with open(os.path.join(root, "config.json"), "rb") as f:
            assert f.read() == fixture.read(files["config.json"])
        both = files["config.json"]["size"] + files["model.safetensors"]["size"]
        assert eventually(lambda: int(m.stats().get("hf_cache.bytes_hashed", 0)) == both, 20), m.stats()
        assert "using huggingface_hub's copy" in m.read_log()
        assert sha256_file(os.path.join(root, "model.safetensors")) == files["model.safetensors"]["sha256"]
        assert int(m.stats()["hf_cache.bytes_hashed"]) == both  # the open found it hashed


def test_warm_verifies_huggingface_hubs_copies_instead_of_fetching_them(emu, fixture, tmp_path):
    """`hubfs warm` of a model huggingface_hub partly downloaded: the copies it holds are hashed (the
    verdicts kept in hubfs's cache directory) and not fetched, the other files and a damaged copy
    are fetched, and a mount then reads every file with nothing downloaded and nothing hashed."""
    hf = str(tmp_path / "hub")
    copies = populate(fixture, hf, only={"model.safetensors", "config.json", "onnx/model.onnx"})
    with open(copies["onnx/model.onnx"], "r+b") as f:  # same size, other bytes
        f.write(b"\0" * 16)
    files = fixture.files(MODEL)
    cache = str(tmp_path / "cache")
    emu.clear_log()
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"))
    env.pop("HF_TOKEN", None)
    r = subprocess.run([HUBFS_BIN, "warm", MODEL, "--endpoint", emu.hub_url, "--cache-dir", cache, "--hf-cache", hf],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "warmed %d files" % len(files) in r.stdout and "2 of them in huggingface_hub's cache" in r.stdout, r.stdout
    fetched = [x["path"] for x in downloads(emu)]
    for name in ("model.safetensors", "config.json"):
        blob = files[name]["sha256"]
        assert not [p for p in fetched if p.endswith("/" + name) or blob in p], (name, fetched)
    for name in ("onnx/model.onnx", "README.md"):
        blob = files[name]["sha256"]
        assert [p for p in fetched if p.endswith("/" + name) or blob in p], (name, fetched)
    assert tree_state(hf) and os.path.getsize(copies["onnx/model.onnx"]) == files["onnx/model.onnx"]["size"]
    # The three verdicts (two sound copies, one damaged) are kept apart from the repo records.
    r = subprocess.run([HUBFS_BIN, "cache", "stats", "--cache-dir", cache], capture_output=True, text=True, timeout=60)
    assert "hf copy verdicts: 3 " in r.stdout and "repo records:     4 " in r.stdout, r.stdout
    r = subprocess.run([HUBFS_BIN, "cache", "verify", "--cache-dir", cache], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "3 verdicts on huggingface_hub's copies checked, 0 bad" in r.stdout, r.stdout
    emu.clear_log()
    with Mount(emu.hub_url, cache_dir=cache, extra_args=["--hf-cache", hf]) as m:
        for path, meta in files.items():
            assert sha256_file(m.path(ORG, NAME, path)) == meta["sha256"], path
        stats = m.stats()
        assert int(stats.get("hf_cache.bytes_hashed", 0)) == 0, stats
        assert int(stats["hf_cache.copies_used"]) >= 2, stats
    assert downloads(emu) == []
    # Without huggingface_hub's cache (--hf-cache none) the same warm fetches what it did not.
    emu.clear_log()
    r = subprocess.run([HUBFS_BIN, "warm", MODEL, "--endpoint", emu.hub_url, "--cache-dir", cache, "--hf-cache", "none"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "huggingface_hub" not in r.stdout + r.stderr
    fetched = [x["path"] for x in downloads(emu)]
    assert [p for p in fetched if files["model.safetensors"]["sha256"] in p or p.endswith("/model.safetensors")]
    # `cache clear` forgets the verdicts with everything else.
    r = subprocess.run([HUBFS_BIN, "cache", "clear", "--cache-dir", cache], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([HUBFS_BIN, "cache", "stats", "--cache-dir", cache], capture_output=True, text=True, timeout=60)
    assert "hf copy verdicts: 0 " in r.stdout, r.stdout
