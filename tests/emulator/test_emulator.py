"""Protocol tests of the local hub emulator (tools/hubemu), with urllib/http.client only.

Run: /usr/bin/python3 -m pytest tests/emulator
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from urllib.parse import quote

import pytest

from hubemu_testlib import HUBEMU_DIR, Client, split_url, sha256

import gen_fixture
import gitobj
from hubemu import Emulator, EmulatorError

TINY = "hubfs-test/tiny-model"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
LINK_RE = re.compile(r'<(https?:[/][/][^>]+)>;\s+rel="([^"]+)"')  # the regex of @huggingface/hub
ALICE = {"Authorization": "Bearer hf_alice"}
BOB = {"Authorization": "Bearer hf_bob"}
NOPE = {"Authorization": "Bearer hf_not_a_real_token"}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def follow(client_base, resp):
    """Follow one redirect (relative or absolute) without Authorization. Returns (base, path)."""
    loc = resp.h["location"]
    if loc.startswith("/"):
        return client_base, loc
    return split_url(loc)


def fetch_url(url, headers=None, method="GET"):
    base, path = split_url(url)
    c = Client(base)
    try:
        return c.request(method, path, headers)
    finally:
        c.close()


def resolve_bytes(emu, path, headers=None):
    """GET a resolve URL like a careful client: follow redirects, drop auth on other origins."""
    hub = Client(emu.hub_url)
    try:
        r = hub.get(path, headers)
        hops = 0
        while r.status in (301, 302, 307, 308):
            hops += 1
            assert hops < 5
            loc = r.h["location"]
            if loc.startswith("/"):
                r = hub.get(loc, headers)
            else:
                h = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
                r = fetch_url(loc, h)
        return r
    finally:
        hub.close()


# ----------------------------------------------------------------------------------------------
# fixture generator


def test_fixture_is_deterministic(fixture_dir):
    d = tempfile.mkdtemp(prefix="hubemu-fx2-")
    try:
        gen_fixture.generate(os.path.join(d, "fx"), "test")
        with open(os.path.join(fixture_dir, "repos.json"), "rb") as a, open(os.path.join(d, "fx", "repos.json"), "rb") as b:
            assert a.read() == b.read()
        assert sorted(os.listdir(os.path.join(fixture_dir, "objects"))) == sorted(os.listdir(os.path.join(d, "fx", "objects")))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fixture_hashes_and_lfs_rule(fx):
    total = 0
    seen = set()
    for r in fx.doc["repos"]:
        for c in r["commits"]:
            trees = gitobj.tree_oids({p: e["oid"] for p, e in c["files"].items()})
            assert trees[""] == c["tree"]
            for path, e in c["files"].items():
                data = fx.data(r["id"], path, c["id"], r["type"])
                assert len(data) == e["size"]
                assert sha256(data) == e["sha256"]
                assert e["lfs"] == gitobj.is_lfs(path, e["size"])
                if e["lfs"]:
                    ptr = gitobj.lfs_pointer(e["sha256"], e["size"])
                    assert ptr.startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
                    assert e["pointer_size"] == len(ptr)
                    assert e["oid"] == gitobj.blob_oid(ptr)
                else:
                    assert e["oid"] == gitobj.blob_oid(data)
                if e["sha256"] not in seen:
                    seen.add(e["sha256"])
                    total += e["size"]
    assert total < 60 * 1024 * 1024


def test_tree_oids_match_git(fx, fresh_dir):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    c = fx.commit(TINY)
    work = fresh_dir / "w"
    work.mkdir()
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(fresh_dir))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True, env=env)
    for path, e in c["files"].items():
        p = work / path
        p.parent.mkdir(parents=True, exist_ok=True)
        data = gitobj.lfs_pointer(e["sha256"], e["size"]) if e["lfs"] else fx.data(TINY, path)
        p.write_bytes(data)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
    tree = subprocess.run(["git", "write-tree"], cwd=work, check=True, env=env, capture_output=True, text=True).stdout.strip()
    assert tree == c["tree"]


def test_test_preset_contents(fx):
    tiny = fx.repo(TINY)
    main = fx.commit(TINY)
    files = main["files"]
    for p in ["config.json", "README.md", "tokenizer.json", "model.safetensors", "onnx/model.onnx",
              "a/b/c/deep.txt", "empty.txt", "file@1.txt", "docs/hello w\u00f6rld \u00fc.txt"]:
        assert p in files, p
    assert files["empty.txt"]["size"] == 0
    assert files["tokenizer.json"]["lfs"] and 250_000 < files["tokenizer.json"]["size"] < 400_000
    assert 15e6 < files["model.safetensors"]["size"] < 25e6
    # 3 commits of history on main, tag on an older commit where config.json differs
    hist = []
    cid = tiny["refs"]["branches"]["main"]
    by_id = {c["id"]: c for c in tiny["commits"]}
    while cid:
        hist.append(cid)
        ps = by_id[cid]["parents"]
        cid = ps[0] if ps else None
    assert len(hist) == 3
    v1 = fx.commit(TINY, "v1.0")
    assert v1["id"] in hist and v1["id"] != hist[0]
    assert v1["files"]["config.json"]["sha256"] != files["config.json"]["sha256"]
    assert "dev" in tiny["refs"]["branches"] and "1" in tiny["refs"]["pull_requests"]
    ds = fx.commit("hubfs-test/big-dataset", rtype="dataset")
    data_files = [p for p in ds["files"] if p.startswith("data/")]
    assert len(data_files) == 1500
    assert all(100 < ds["files"][p]["size"] < 1000 for p in data_files)


def test_safetensors_is_valid(fx):
    data = fx.data(TINY, "model.safetensors")
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(data[8:8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert len(tensors) >= 28
    assert {"F32", "F16", "BF16", "I64"} <= {v["dtype"] for v in tensors.values()}
    assert "model.layers.0.self_attn.q_proj.weight" in tensors
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
    spans = sorted(tuple(v["data_offsets"]) for v in tensors.values())
    pos = 0
    for (a, b) in spans:
        assert a == pos
        pos = b
    assert 8 + n + pos == len(data)
    for v in tensors.values():
        numel = 1
        for d in v["shape"]:
            numel *= d
        assert v["data_offsets"][1] - v["data_offsets"][0] == numel * sizes[v["dtype"]]
    # F32 norm weights are ~1.0, integer position ids count up
    import numpy as np
    norm = tensors["model.norm.weight"]
    arr = np.frombuffer(data[8 + n + norm["data_offsets"][0]:8 + n + norm["data_offsets"][1]], dtype=np.float32)
    assert 0.8 < float(arr.mean()) < 1.2
    pid = tensors["model.position_ids"]
    ids = np.frombuffer(data[8 + n + pid["data_offsets"][0]:8 + n + pid["data_offsets"][1]], dtype=np.int64)
    assert list(ids[:5]) == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------
# repo info, revisions, refs


def test_model_info(hub, fx):
    r = hub.get("/api/models/" + TINY)
    assert r.status == 200
    d = r.json()
    main = fx.commit(TINY)
    assert d["id"] == TINY and d["sha"] == main["id"] and re.fullmatch(r"[0-9a-f]{24}", d["_id"])
    assert ISO_Z.match(d["lastModified"]) and ISO_Z.match(d["createdAt"])
    assert d["private"] is False and d["gated"] is False and d["disabled"] is False
    assert sorted(s["rfilename"] for s in d["siblings"]) == sorted(main["files"])
    assert all(set(s) == {"rfilename"} for s in d["siblings"])
    for k in ("downloads", "likes", "tags", "usedStorage", "library_name", "pipeline_tag"):
        assert k in d
    d = hub.get("/api/models/%s?blobs=true" % TINY).json()
    sib = {s["rfilename"]: s for s in d["siblings"]}
    e = main["files"]["model.safetensors"]
    assert sib["model.safetensors"]["lfs"] == {"size": e["size"], "sha256": e["sha256"], "pointerSize": e["pointer_size"]}
    assert sib["model.safetensors"]["blobId"] == e["oid"] and sib["model.safetensors"]["size"] == e["size"]
    assert "lfs" not in sib["config.json"] and sib["config.json"]["size"] == main["files"]["config.json"]["size"]


@pytest.mark.parametrize("rtype,rid", [("datasets", "hubfs-test/big-dataset"), ("spaces", "hubfs-test/demo-space")])
def test_dataset_and_space_info(hub, fx, rtype, rid):
    d = hub.get("/api/%s/%s" % (rtype, rid)).json()
    assert d["id"] == rid and d["sha"] == fx.commit(rid, rtype=rtype[:-1])["id"]


def test_revision_forms(hub, fx):
    tiny = fx.repo(TINY)
    main = tiny["refs"]["branches"]["main"]
    v1 = tiny["refs"]["tags"]["v1.0"]
    pr1 = tiny["refs"]["pull_requests"]["1"]
    cases = {
        "HEAD": main, "main": main, "v1.0": v1, "dev": tiny["refs"]["branches"]["dev"],
        main: main, v1[:7]: v1, v1[:5]: v1, v1.upper(): v1, "refs%2Fpr%2F1": pr1,
        "refs%2Fheads%2Fmain": main, "refs%2Ftags%2Fv1.0": v1,
    }
    for rev, want in cases.items():
        r = hub.get("/api/models/%s/revision/%s" % (TINY, rev))
        assert r.status == 200, rev
        assert r.json()["sha"] == want, rev
    ds = fx.repo("hubfs-test/big-dataset", "dataset")
    r = hub.get("/api/datasets/hubfs-test/big-dataset/revision/refs%2Fconvert%2Fparquet")
    assert r.json()["sha"] == ds["refs"]["converts"]["parquet"]
    # lastModified follows the revision
    assert hub.get("/api/models/%s/revision/v1.0" % TINY).json()["lastModified"] == fx.commit(TINY, "v1.0")["date"]


def test_revision_not_found_and_raw_pr_ref(hub, emu, fixture_dir):
    for path in ("/api/models/%s/revision/nope" % TINY, "/api/models/%s/revision/refs/pr/1" % TINY,
                 "/api/models/%s/tree/nope" % TINY, "/%s/resolve/nope/config.json" % TINY,
                 "/%s/resolve/refs/pr/1/README.md" % TINY, "/api/models/%s/revision/abcde" % TINY,
                 "/api/models/%s/revision/refs%%2Fpr%%2F99" % TINY):
        r = hub.get(path)
        assert r.status == 404, path
        assert r.h["x-error-code"] == "RevisionNotFound", path
    with Emulator(fixture_dir, lenient_refs=True) as lenient:
        c = Client(lenient.hub_url)
        assert c.get("/api/models/%s/revision/refs/pr/1" % TINY).status == 200
        r = c.get("/api/models/%s/tree/refs/pr/1?recursive=true" % TINY)
        assert r.status == 200 and "pr-notes.txt" in [e["path"] for e in r.json()]
        r = c.get("/%s/resolve/refs/pr/1/pr-notes.txt" % TINY)
        assert r.status == 307
        assert c.get(r.h["location"]).body == b"added by pull request 1\n"
        r = c.get("/api/datasets/hubfs-test/big-dataset/tree/refs/convert/parquet/default/train")
        assert r.status == 200 and r.json()[0]["path"] == "default/train/0000.parquet"
        c.close()


def test_refs(hub, fx):
    d = hub.get("/api/models/%s/refs" % TINY).json()
    assert set(d) == {"branches", "converts", "tags"}
    assert {b["name"] for b in d["branches"]} == {"main", "dev"}
    main = [b for b in d["branches"] if b["name"] == "main"][0]
    assert main == {"name": "main", "ref": "refs/heads/main", "targetCommit": fx.commit(TINY)["id"]}
    assert d["tags"] == [{"name": "v1.0", "ref": "refs/tags/v1.0", "targetCommit": fx.commit(TINY, "v1.0")["id"]}]
    assert d["converts"] == []
    d = hub.get("/api/models/%s/refs?include_prs=1" % TINY).json()
    assert d["pullRequests"] == [{"name": "1", "ref": "refs/pr/1",
                                  "targetCommit": fx.repo(TINY)["refs"]["pull_requests"]["1"]}]
    d = hub.get("/api/datasets/hubfs-test/big-dataset/refs").json()
    assert [c["ref"] for c in d["converts"]] == ["refs/convert/parquet"]


def test_legacy_alias_and_renamed_repo(hub, fx):
    d = hub.get("/api/models/gpt2").json()
    assert d["id"] == "openai-community/gpt2"
    assert hub.get("/api/models/gpt2/revision/main").json()["id"] == "openai-community/gpt2"
    assert len(hub.get("/api/models/gpt2/tree/main").json()) > 3
    r = hub.get("/gpt2/resolve/main/config.json?download=true")
    assert r.status == 307
    assert r.h["location"] == "/openai-community/gpt2/resolve/main/config.json?download=true"
    r = hub.head("/hubfs-test/tiny-model-old/resolve/v1.0/config.json")
    assert r.status == 307 and r.h["location"] == "/hubfs-test/tiny-model/resolve/v1.0/config.json"
    assert hub.get("/api/models/hubfs-test/tiny-model-old").json()["id"] == TINY


def test_commits_listing(hub, fx):
    d = hub.get("/api/models/%s/commits/main" % TINY).json()
    assert len(d) == 3 and d[0]["id"] == fx.commit(TINY)["id"]
    assert set(d[0]) >= {"id", "title", "message", "date", "authors"}
    assert ISO_Z.match(d[0]["date"]) and d[0]["authors"][0]["user"]
    assert len(hub.get("/api/models/%s/commits/dev" % TINY).json()) == 4
    r = hub.get("/api/models/%s/commits/main?limit=2" % TINY)
    assert len(r.json()) == 2
    nxt = LINK_RE.search(r.h["link"]).group(1)
    base, path = split_url(nxt)
    assert len(hub.get(path).json()) == 1


def test_whoami_and_auth_check(hub):
    d = hub.get("/api/whoami-v2", ALICE).json()
    assert d["name"] == "alice" and d["type"] == "user" and "hubfs-test" in [o["name"] for o in d["orgs"]]
    assert hub.get("/api/whoami-v2").status == 401
    r = hub.get("/api/whoami-v2", NOPE)
    assert r.status == 401 and r.h["x-error-message"] == "Invalid credentials in Authorization header"
    assert hub.get("/api/models/%s/auth-check" % TINY).status == 200
    r = hub.get("/api/models/hubfs-test/gated-model/auth-check")
    assert r.status == 401 and r.h["x-error-code"] == "GatedRepo"
    assert hub.get("/api/models/hubfs-test/gated-model/auth-check", BOB).status == 403
    assert hub.get("/api/models/hubfs-test/gated-model/auth-check", ALICE).status == 200


def test_org_listing_pagination(hub):
    def collect(path, headers=None):
        out, pages = [], 0
        while path:
            r = hub.get(path, headers)
            assert r.status == 200
            items = r.json()
            assert len(items) <= 2
            out += items
            pages += 1
            m = LINK_RE.search(r.h.get("link", ""))
            path = split_url(m.group(1))[1] if m else None
        return out, pages

    anon, pages = collect("/api/models?author=hubfs-test&limit=1000")
    ids = [m["id"] for m in anon]
    assert len(ids) > 3 and pages >= 2 and len(set(ids)) == len(ids)
    assert "hubfs-test/private-model" not in ids and TINY in ids
    for m in anon:
        assert {"_id", "id", "private", "gated", "lastModified", "sha"} <= set(m)
        assert ISO_Z.match(m["lastModified"])
    alice, _ = collect("/api/models?author=hubfs-test", ALICE)
    assert "hubfs-test/private-model" in [m["id"] for m in alice]
    ds, _ = collect("/api/datasets?author=hubfs-test")
    assert {d["id"] for d in ds} == {"hubfs-test/big-dataset", "hubfs-test/gated-dataset"}
    sp, _ = collect("/api/spaces?author=hubfs-test")
    assert [s["id"] for s in sp] == ["hubfs-test/demo-space"]


# ----------------------------------------------------------------------------------------------
# tree listing and paths-info


def test_tree_root_and_recursive(hub, fx):
    main = fx.commit(TINY)
    d = hub.get("/api/models/%s/tree/main" % TINY).json()
    paths = {e["path"]: e for e in d}
    assert paths["a"]["type"] == "directory" and paths["a"]["size"] == 0
    assert "a/b" not in paths and "config.json" in paths
    d = hub.get("/api/models/%s/tree/main?recursive=true&expand=false" % TINY).json()
    files = {e["path"]: e for e in d if e["type"] == "file"}
    dirs = {e["path"] for e in d if e["type"] == "directory"}
    assert set(files) == set(main["files"])
    assert dirs == {"a", "a/b", "a/b/c", "docs", "onnx"}
    trees = gitobj.tree_oids({p: e["oid"] for p, e in main["files"].items()})
    for e in d:
        if e["type"] == "directory":
            assert e["oid"] == trees[e["path"]]
    st = files["model.safetensors"]
    fe = main["files"]["model.safetensors"]
    assert st == {"type": "file", "oid": fe["oid"], "size": fe["size"], "path": "model.safetensors",
                  "lfs": {"oid": fe["sha256"], "size": fe["size"], "pointerSize": fe["pointer_size"]}}
    assert "lfs" not in files["config.json"] and "lastCommit" not in files["config.json"]
    for v in ("1", "True", "true"):
        assert len(hub.get("/api/models/%s/tree/main?recursive=%s" % (TINY, v)).json()) == len(d)


def test_tree_expand_last_commit(hub, fx):
    tiny = fx.repo(TINY)
    commits = [c for c in tiny["commits"]]
    c1, c2, c3 = commits[0], commits[1], commits[2]
    d = hub.get("/api/models/%s/tree/main?recursive=true&expand=true" % TINY).json()
    by = {e["path"]: e for e in d}
    assert by["config.json"]["lastCommit"] == {"id": c3["id"], "title": c3["title"], "date": c3["date"]}
    assert by["model.safetensors"]["lastCommit"]["id"] == c2["id"]
    assert by[".gitattributes"]["lastCommit"]["id"] == c1["id"]
    assert by["a"]["lastCommit"]["id"] == c2["id"]
    d = hub.get("/api/models/%s/tree/v1.0?expand=true" % TINY).json()
    by = {e["path"]: e for e in d}
    assert by["config.json"]["lastCommit"]["id"] == c1["id"]
    assert "old-notes.txt" in by


def test_tree_subpath_encodings_and_errors(hub, fx):
    for path in ("a/b", "a%2Fb", "a/b/"):
        r = hub.get("/api/models/%s/tree/main/%s" % (TINY, path))
        assert r.status == 200, path
        assert sorted(e["path"] for e in r.json()) == ["a/b/c", "a/b/sibling.txt"]
    r = hub.get("/api/models/%s/tree/main/docs" % TINY)
    assert [e["path"] for e in r.json()] == ["docs/hello w\u00f6rld \u00fc.txt"]
    r = hub.get("/api/models/%s/tree/main/" % TINY + quote("docs/hello w\u00f6rld \u00fc.txt", safe=""))
    assert r.status == 404 and r.h["x-error-code"] == "EntryNotFound"
    for p in ("missing", "config.json", "a/nope"):
        r = hub.get("/api/models/%s/tree/main/%s" % (TINY, p))
        assert r.status == 404 and r.h["x-error-code"] == "EntryNotFound", p
        assert r.h["x-repo-commit"] == fx.commit(TINY)["id"]
        assert "error" in r.json()
    r = hub.get("/api/models/%s/tree/main?cursor=!!!" % TINY)
    assert r.status == 400


def test_tree_pagination_1500_entries(hub, emu):
    path = "/api/datasets/hubfs-test/big-dataset/tree/main/data?recursive=false&expand=false"
    seen, pages = [], 0
    while path:
        r = hub.get(path)
        assert r.status == 200
        items = r.json()
        seen += [e["path"] for e in items]
        pages += 1
        link = r.h.get("link")
        if pages == 1:
            assert len(items) == 1000
            m = LINK_RE.fullmatch(link)
            assert m and m.group(2) == "next"
            assert m.group(1).startswith(emu.hub_url + "/api/datasets/hubfs-test/big-dataset/tree/main/data?")
            assert "recursive=false" in m.group(1) and "expand=false" in m.group(1) and "&cursor=" in m.group(1)
        path = split_url(LINK_RE.search(link).group(1))[1] if link else None
    assert pages == 2 and len(seen) == 1500 == len(set(seen))
    # recursive listing from the root includes the directory entry and everything below it
    total, path = 0, "/api/datasets/hubfs-test/big-dataset/tree/main?recursive=true"
    while path:
        r = hub.get(path)
        total += len(r.json())
        link = r.h.get("link")
        path = split_url(LINK_RE.search(link).group(1))[1] if link else None
    assert total == 1500 + 1 + 3  # data/ files, the data dir, .gitattributes README.md metadata.csv
    # expand pages are smaller, limit lowers the page size
    r = hub.get("/api/datasets/hubfs-test/big-dataset/tree/main/data?expand=true")
    assert len(r.json()) == 50 and "lastCommit" in r.json()[0] and "link" in r.h
    r = hub.get("/api/datasets/hubfs-test/big-dataset/tree/main/data?limit=7")
    assert len(r.json()) == 7 and "limit=7" in r.h["link"]


def test_paths_info_form_and_json(hub, fx):
    main = fx.commit(TINY)
    url = "/api/models/%s/paths-info/main" % TINY
    body = "paths=config.json&paths=a%2Fb&paths=missing.txt&paths=model.safetensors&expand=false"
    r = hub.request("POST", url, {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert r.status == 200
    d = r.json()
    assert [e["path"] for e in d] == ["config.json", "a/b", "model.safetensors"]
    assert d[1]["type"] == "directory"
    assert d[2]["lfs"]["oid"] == main["files"]["model.safetensors"]["sha256"]
    r = hub.request("POST", url, {"Content-Type": "application/json"},
                    json.dumps({"paths": ["config.json", "nope"], "expand": True}))
    d = r.json()
    assert len(d) == 1 and d[0]["lastCommit"]["id"] == main["id"]
    r = hub.request("POST", url, {"Content-Type": "application/json"}, json.dumps({"paths": "README.md"}))
    assert [e["path"] for e in r.json()] == ["README.md"] and "lastCommit" not in r.json()[0]
    r = hub.request("POST", url, {"Content-Type": "application/json"}, json.dumps({"paths": ["missing"]}))
    assert r.status == 200 and r.json() == []
    r = hub.request("POST", "/api/models/%s/paths-info/refs%%2Fpr%%2F1" % TINY,
                    {"Content-Type": "application/json"}, json.dumps({"paths": ["pr-notes.txt"]}))
    assert len(r.json()) == 1
    r = hub.request("POST", url, {"Content-Type": "application/json"}, "{not json")
    assert r.status == 400
    r = hub.request("POST", "/api/models/%s/paths-info/nope" % TINY, {"Content-Type": "application/json"}, "{}")
    assert r.status == 404 and r.h["x-error-code"] == "RevisionNotFound"


# ----------------------------------------------------------------------------------------------
# status matrix


def test_error_matrix(hub):
    def check(path, headers, status, code, message=None, method="GET"):
        r = hub.request(method, path, headers)
        assert r.status == status, (path, headers, r)
        assert r.h.get("x-error-code") == code, (path, r)
        assert "x-error-message" in r.h
        if message:
            assert r.h["x-error-message"] == message
        if method == "GET":
            assert r.json()["error"] == r.h["x-error-message"]
        return r

    inv = "Invalid credentials in Authorization header"
    # invalid token, even on a public repo
    for p in ("/api/models/" + TINY, "/api/models/%s/tree/main" % TINY, "/%s/resolve/main/config.json" % TINY,
              "/api/models?author=hubfs-test"):
        check(p, NOPE, 401, None, inv)
    check("/%s/resolve/main/config.json" % TINY, NOPE, 401, None, inv, method="HEAD")
    check("/api/models/" + TINY, {"Authorization": "Basic Zm9vOmJhcg=="}, 401, None, inv)
    # missing repo / private repo
    for rid in ("hubfs-test/does-not-exist", "hubfs-test/private-model"):
        for p in ("/api/models/" + rid, "/api/models/%s/tree/main" % rid, "/%s/resolve/main/config.json" % rid,
                  "/api/models/%s/refs" % rid, "/%s/raw/main/config.json" % rid):
            check(p, {}, 401, "RepoNotFound")
            check(p, BOB, 404, "RepoNotFound")
        check("/%s/resolve/main/config.json" % rid, {}, 401, "RepoNotFound", method="HEAD")
    check("/datasets/hubfs-test/nope/resolve/main/x", BOB, 404, "RepoNotFound")
    assert hub.get("/api/models/hubfs-test/private-model", ALICE).status == 200
    assert hub.get("/api/models/hubfs-test/private-model/tree/main", ALICE).status == 200
    assert hub.get("/hubfs-test/private-model/resolve/main/config.json", ALICE).status == 307
    # gated: metadata open, content gated
    for h in ({}, BOB, ALICE):
        assert hub.get("/api/models/hubfs-test/gated-model", h).json()["gated"] == "manual"
        assert hub.get("/api/models/hubfs-test/gated-model/tree/main", h).status == 200
        r = hub.request("POST", "/api/models/hubfs-test/gated-model/paths-info/main",
                        dict(h, **{"Content-Type": "application/json"}), '{"paths":["config.json"]}')
        assert r.status == 200
    r = check("/hubfs-test/gated-model/resolve/main/config.json", {}, 401, "GatedRepo")
    assert "restricted" in r.h["x-error-message"] and "Please log in" in r.h["x-error-message"]
    r = check("/hubfs-test/gated-model/resolve/main/model.safetensors", BOB, 403, "GatedRepo")
    assert "not in the authorized list" in r.h["x-error-message"]
    check("/hubfs-test/gated-model/resolve/main/config.json", BOB, 403, "GatedRepo", method="HEAD")
    check("/hubfs-test/gated-model/raw/main/config.json", {}, 401, "GatedRepo")
    assert hub.get("/hubfs-test/gated-model/resolve/main/model.safetensors", ALICE).status == 302
    r = check("/datasets/hubfs-test/gated-dataset/resolve/main/data.csv", BOB, 403, "GatedRepo")
    assert "dataset hubfs-test/gated-dataset" in r.h["x-error-message"]
    # disabled
    dis = "Access to this resource is disabled."
    for p in ("/api/models/hubfs-test/disabled-model", "/api/models/hubfs-test/disabled-model/tree/main",
              "/hubfs-test/disabled-model/resolve/main/config.json"):
        for h in ({}, ALICE):
            check(p, h, 403, None, dis)
    # revision / entry
    check("/%s/resolve/nope/config.json" % TINY, {}, 404, "RevisionNotFound")
    r = check("/%s/resolve/main/nope.txt" % TINY, {}, 404, "EntryNotFound")
    r2 = check("/%s/resolve/main/nope.txt" % TINY, {}, 404, "EntryNotFound", method="HEAD")
    assert r.h["x-repo-commit"] == r2.h["x-repo-commit"] and len(r.h["x-repo-commit"]) == 40
    check("/%s/resolve/main/a/b" % TINY, {}, 404, "EntryNotFound")  # a directory
    check("/%s/resolve/main/old-notes.txt" % TINY, {}, 404, "EntryNotFound")  # deleted in commit 3
    check("/%s/raw/main/nope.txt" % TINY, {}, 404, "EntryNotFound")
    # unknown routes: plain 404
    assert hub.get("/api/nothing-here").status == 404
    assert hub.get("/hubfs-test/tiny-model/blame/main/config.json").status == 404


# ----------------------------------------------------------------------------------------------
# file routes


def test_small_file_307_then_200(hub, fx, emu):
    main = fx.commit(TINY)
    e = main["files"]["config.json"]
    want = fx.data(TINY, "config.json")
    for method in ("HEAD", "GET"):
        r = hub.request(method, "/%s/resolve/main/config.json" % TINY)
        assert r.status == 307
        loc = r.h["location"]
        assert loc.startswith("/api/resolve-cache/models/%s/%s/config.json?" % (TINY, main["id"]))
        assert "etag=%22" + e["oid"] + "%22" in loc
        assert r.h["x-repo-commit"] == main["id"] and r.h["etag"] == '"%s"' % e["oid"]
        for target in (loc, loc.split("?")[0]):  # Python drops the query string
            r2 = hub.request(method, target)
            assert r2.status == 200
            assert r2.h["etag"] == '"%s"' % e["oid"] and r2.h["x-repo-commit"] == main["id"]
            assert r2.h["accept-ranges"] == "bytes" and int(r2.h["content-length"]) == len(want)
            assert r2.body == (want if method == "GET" else b"")


def test_small_file_direct_200(emu200, fx):
    c = Client(emu200.hub_url)
    main = fx.commit(TINY)
    for path in ("config.json", "a/b/c/deep.txt", "file@1.txt", "text-64k-minus-1.txt"):
        r = c.get("/%s/resolve/main/%s" % (TINY, quote(path)))
        assert r.status == 200, path
        assert r.body == fx.data(TINY, path)
        assert r.h["etag"] == '"%s"' % main["files"][path]["oid"]
        assert r.h["x-repo-commit"] == main["id"] and r.h["accept-ranges"] == "bytes"
        r = c.head("/%s/resolve/main/%s" % (TINY, quote(path)))
        assert r.status == 200 and r.body == b"" and int(r.h["content-length"]) == main["files"][path]["size"]
    r = c.get("/%s/resolve/main/empty.txt" % TINY)
    assert r.status == 200 and r.body == b"" and r.h["content-length"] == "0"
    c.close()


def test_special_file_names(emu200, fx):
    c = Client(emu200.hub_url)
    uni = "docs/hello w\u00f6rld \u00fc.txt"
    want = fx.data(TINY, uni)
    # Python style (quote keeps "/"), fully escaped, and JS style (path sent raw: "@" unescaped)
    for p in (quote(uni), quote(uni, safe="")):
        r = c.get("/%s/resolve/main/%s" % (TINY, p))
        assert r.status == 200 and r.body == want, p
    assert c.get("/%s/resolve/main/file@1.txt" % TINY).body == fx.data(TINY, "file@1.txt")
    assert c.get("/%s/resolve/main/file%%401.txt" % TINY).body == fx.data(TINY, "file@1.txt")
    c.close()


def test_resolve_revisions(emu200, fx):
    c = Client(emu200.hub_url)
    tiny = fx.repo(TINY)
    v1 = tiny["refs"]["tags"]["v1.0"]
    cases = [("v1.0", "config.json", v1), (v1, "config.json", v1), (v1[:8], "config.json", v1),
             ("main", "config.json", tiny["refs"]["branches"]["main"]),
             ("dev", "dev-only.txt", tiny["refs"]["branches"]["dev"]),
             ("refs%2Fpr%2F1", "pr-notes.txt", tiny["refs"]["pull_requests"]["1"]),
             ("v1.0", "old-notes.txt", v1)]
    for rev, path, cid in cases:
        r = c.get("/%s/resolve/%s/%s" % (TINY, rev, path))
        assert r.status == 200, (rev, path)
        assert r.h["x-repo-commit"] == cid
        assert r.body == fx.data(TINY, path, cid)
    assert c.get("/%s/resolve/v1.0/config.json" % TINY).body != c.get("/%s/resolve/main/config.json" % TINY).body
    r = c.get("/datasets/hubfs-test/big-dataset/resolve/main/data/part-00042.jsonl")
    assert r.body == fx.data("hubfs-test/big-dataset", "data/part-00042.jsonl", rtype="dataset")
    r = c.get("/spaces/hubfs-test/demo-space/resolve/main/index.html")
    assert r.status == 200 and b"hubfs demo space" in r.body
    c.close()


def test_lfs_redirect_and_cdn(hub, emu, fx):
    main = fx.commit(TINY)
    e = main["files"]["model.safetensors"]
    for method in ("HEAD", "GET"):
        r = hub.request(method, "/%s/resolve/main/model.safetensors" % TINY)
        assert r.status == 302
        loc = r.h["location"]
        assert loc.startswith(emu.cdn_url + "/lfs/" + e["sha256"] + "?")
        q = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)
        assert set(q) >= {"Expires", "Signature", "Key-Pair-Id", "response-content-disposition"}
        assert int(q["Expires"][0]) > time.time() + 3000
        assert r.h["x-repo-commit"] == main["id"]
        assert r.h["x-linked-etag"] == '"%s"' % e["sha256"] and r.h["x-linked-size"] == str(e["size"])
        assert r.h["etag"] and e["sha256"] not in r.h["etag"]
        assert r.h["content-type"].startswith("text/plain")
        assert int(r.h["content-length"]) == (len(r.body) if method == "GET" else int(r.h["content-length"]))
        if method == "GET":
            assert 0 < len(r.body) < 1000
    cdn = fetch_url(loc)
    assert cdn.status == 200 and sha256(cdn.body) == e["sha256"]
    assert cdn.h["etag"] and "model.safetensors" in cdn.h["content-disposition"]
    assert int(cdn.h["content-length"]) == e["size"] and cdn.h["accept-ranges"] == "bytes"
    assert "x-repo-commit" not in cdn.h
    # the CDN never sees the token when the client drops it
    emu.clear_log()
    r = resolve_bytes(emu, "/hubfs-test/private-model/resolve/main/model.safetensors", ALICE)
    assert sha256(r.body) == fx.entry("hubfs-test/private-model", "model.safetensors")["sha256"]
    recs = emu.wait_log(lambda rs: any(x["origin"] == "cdn" for x in rs))
    hub_recs = [x for x in recs if x["origin"] == "hub"]
    cdn_recs = [x for x in recs if x["origin"] == "cdn"]
    assert hub_recs[0]["auth"] is True and hub_recs[0]["status"] == 302
    assert len(cdn_recs) == 1 and cdn_recs[0]["auth"] is False and cdn_recs[0]["status"] == 200
    assert cdn_recs[0]["bytes"] == len(r.body) and cdn_recs[0]["via"] == "nginx"
    # a client that forwards the token is caught by the log
    emu.clear_log()
    fetch_url(loc, {"Authorization": "Bearer hf_alice", "Range": "bytes=0-9"})
    rec = emu.wait_log(lambda rs: len(rs) == 1, origin="cdn")[0]
    assert rec["auth"] is True and rec["range"] == "bytes=0-9" and rec["status"] == 206 and rec["bytes"] == 10


def test_ranges_on_both_origins(emu200, emu, fx):
    small = fx.data(TINY, "text-64k-minus-1.txt")
    big = fx.data(TINY, "model.safetensors")
    hub = Client(emu200.hub_url)
    loc = Client(emu.hub_url).get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
    cdn_base, cdn_path = split_url(loc)
    cdn = Client(cdn_base)
    targets = [(lambda h: hub.get("/%s/resolve/main/text-64k-minus-1.txt" % TINY, h), small),
               (lambda h: cdn.get(cdn_path, h), big)]
    for get, data in targets:
        n = len(data)
        for rng, (a, b) in (("bytes=0-0", (0, 0)), ("bytes=10-99", (10, 99)), ("bytes=100-", (100, n - 1)),
                            ("bytes=-10", (n - 10, n - 1)), ("bytes=5-%d" % (n + 50), (5, n - 1))):
            r = get({"Range": rng})
            assert r.status == 206, (rng, r)
            assert r.h["content-range"] == "bytes %d-%d/%d" % (a, b, n)
            assert int(r.h["content-length"]) == b - a + 1
            assert r.body == data[a:b + 1]
        for rng in ("bytes=%d-" % n, "bytes=%d-%d" % (n + 5, n + 10), "bytes=-0"):
            r = get({"Range": rng})
            assert r.status == 416, rng
            assert r.h["content-range"] == "bytes */%d" % n
        r = get({"Range": "bytes=0-1,5-6"})  # multi-range: ignored
        assert r.status == 200 and r.body == data
    hub.close()
    cdn.close()


def test_if_none_match(hub, emu200, fx):
    main = fx.commit(TINY)
    c = Client(emu200.hub_url)
    etag = '"%s"' % main["files"]["config.json"]["oid"]
    r = c.get("/%s/resolve/main/config.json" % TINY, {"If-None-Match": etag})
    assert r.status == 304 and r.body == b"" and r.h["etag"] == etag and r.h["x-repo-commit"] == main["id"]
    assert c.get("/%s/resolve/main/config.json" % TINY, {"If-None-Match": '"other"'}).status == 200
    r = hub.get("/%s/resolve/main/config.json" % TINY, {"If-None-Match": etag})
    assert r.status == 304
    lfs = main["files"]["model.safetensors"]
    r = hub.get("/%s/resolve/main/model.safetensors" % TINY, {"If-None-Match": '"%s"' % lfs["sha256"]})
    assert r.status == 304 and r.h["x-linked-etag"] == '"%s"' % lfs["sha256"]
    # /raw/ ignores If-None-Match
    assert c.get("/%s/raw/main/config.json" % TINY, {"If-None-Match": etag}).status == 200
    # the CDN answers 304 to its own ETag
    loc = hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
    cdn_etag = fetch_url(loc, method="HEAD").h["etag"]
    assert fetch_url(loc, {"If-None-Match": cdn_etag}).status == 304
    c.close()


def test_raw_route(hub, fx):
    main = fx.commit(TINY)
    e = main["files"]["model.safetensors"]
    r = hub.get("/%s/raw/main/model.safetensors" % TINY)
    assert r.status == 200 and r.body == gitobj.lfs_pointer(e["sha256"], e["size"])
    assert r.h["etag"] == '"%s"' % e["oid"] and r.h["x-repo-commit"] == main["id"]
    assert len(r.body) == e["pointer_size"]
    r = hub.head("/%s/raw/main/config.json" % TINY)
    assert r.status == 200 and int(r.h["content-length"]) == main["files"]["config.json"]["size"]
    r = hub.get("/%s/raw/main/config.json" % TINY, {"Range": "bytes=0-1"})
    assert r.status == 206 and r.body == b"{\n"


def test_cdn_url_expiry(fixture_dir, fx):
    with Emulator(fixture_dir, cdn_expiry_s=1) as e:
        hub = Client(e.hub_url)
        loc = hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
        assert fetch_url(loc, {"Range": "bytes=0-7"}).status == 206
        time.sleep(2.2)
        assert fetch_url(loc, {"Range": "bytes=0-7"}).status == 403
        # tampered signature
        assert fetch_url(loc.replace("Signature=", "Signature=x")).status == 403
        # re-resolving gives a fresh URL
        loc2 = hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
        r = fetch_url(loc2, {"Range": "bytes=0-7"})
        assert r.status == 206 and r.body == fx.data(TINY, "model.safetensors")[:8]
        # the python CDN enforces the same rule
        e.set_faults([{"origin": "cdn", "match": "^/nothing$", "status": 500}])
        loc3 = hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
        assert loc3.startswith(e.cdn_py_url)
        assert fetch_url(loc3, {"Range": "bytes=0-7"}).status == 206
        time.sleep(2.2)
        assert fetch_url(loc3, {"Range": "bytes=0-7"}).status == 403
        hub.close()


def test_cdn_rate_limit_caps_each_connection(fixture_dir, fx):
    # --cdn-rate-limit models a distant CDN (one stream is slow, parallel ranges add up); nginx
    # lets the first second's worth through at once, so 16 MiB at 4 MiB/s takes about 3 s.
    rate, n = 4 << 20, 16 << 20
    with Emulator(fixture_dir, cdn_rate_limit=rate) as e:
        loc = Client(e.hub_url).get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
        assert loc.startswith(e.cdn_url)
        t = time.monotonic()
        r = fetch_url(loc, {"Range": "bytes=0-%d" % (n - 1)})
        took = time.monotonic() - t
        assert r.status == 206 and r.body == fx.data(TINY, "model.safetensors")[:n]
        assert took >= 2.0, "a capped connection delivered %d bytes in %.2f s" % (n, took)


def test_keepalive_and_log_fields(emu, hub):
    emu.clear_log()
    for _ in range(20):
        r = hub.request("GET", "/api/models/%s" % TINY, {"User-Agent": "hf-fuse/0.1; test", "Accept": "application/json"})
        assert r.status == 200
    conn = hub.conn
    assert conn is not None and conn.sock is not None  # same connection reused
    recs = emu.log()
    assert len(recs) == 20
    rec = recs[0]
    assert set(rec) >= {"origin", "method", "path", "query", "range", "status", "bytes", "auth", "ua", "t"}
    assert rec["origin"] == "hub" and rec["method"] == "GET" and rec["path"] == "/api/models/" + TINY
    assert rec["ua"] == "hf-fuse/0.1; test" and rec["auth"] is False and rec["bytes"] > 100
    emu.clear_log()
    assert emu.log() == []


def test_token_never_logged(emu, fx):
    secret = "hf_alice"
    resolve_bytes(emu, "/hubfs-test/private-model/resolve/main/model.safetensors", ALICE)
    fetch_url(Client(emu.hub_url).get("/%s/resolve/main/model.safetensors" % TINY).h["location"],
              {"Authorization": "Bearer " + secret, "Range": "bytes=0-3"})
    Client(emu.hub_url).get("/api/whoami-v2", {"Authorization": "Bearer hf_secret_bogus"})
    emu.wait_log(lambda rs: sum(1 for r in rs if r["origin"] == "cdn") >= 2)
    text = json.dumps(emu.log())
    assert secret not in text and "hf_secret_bogus" not in text
    for root, _dirs, files in os.walk(emu.state_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                blob = f.read()
            assert secret.encode() not in blob and b"hf_secret_bogus" not in blob, name


def test_malformed_requests_do_not_crash(emu, hub):
    def raw(data, read=True):
        s = socket.create_connection(("127.0.0.1", urllib.parse.urlparse(emu.hub_url).port), timeout=5)
        try:
            s.sendall(data)
            if not read:
                return b""
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    assert b"400" in raw(b"garbage\r\n\r\n")
    raw(b"\x00\xff\xfe\r\n\r\n")
    raw(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    raw(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"b" * 70000 + b"\r\n\r\n")
    raw(b"POST /api/models/hubfs-test/tiny-model/paths-info/main HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", read=False)
    raw(b"POST /api/models/hubfs-test/tiny-model/paths-info/main HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    out = raw(b"POST /api/models/hubfs-test/tiny-model/paths-info/main HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\nContent-Type: application/json\r\n\r\n"
              + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b'{"paths":["READ', b'ME.md"]', b"}"))
              + b"0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b'"path":"README.md"' in out
    out = raw(b"GET /api/models/hubfs-test/tiny-model HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    out = raw(b"GET http://127.0.0.1/api/models/hubfs-test/tiny-model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    for p in ("/%zz/resolve/main/x", "/api/models/%ff%fe", "/api/models/hubfs-test/tiny-model/tree/%zz",
              "/hubfs-test/tiny-model/resolve/main/%C3%28", "/api/models//", "//", "/api/", "/datasets",
              "/api/models/hubfs-test/tiny-model/revision/", "/api/models/hubfs-test/tiny-model/tree/main/../..",
              "/api/models?limit=abc&cursor=zzz", "/api/models/x/y/z/w/v", "/hubfs-test/tiny-model/resolve",
              "/api/models/hubfs-test/tiny-model/commits/main?p=-1&limit=x"):
        r = hub.get(p)
        assert r.status < 500, (p, r)
    r = hub.get("/api/models/%s/revision/x%%0d%%0aInjected:%%20yes" % TINY)
    assert r.status == 404 and "injected" not in r.h
    r = hub.request("DELETE", "/api/models/" + TINY)
    assert r.status in (404, 405)
    r = hub.request("POST", "/api/models/%s/paths-info/main" % TINY, {"Content-Type": "application/json"},
                    json.dumps({"paths": [1, 2]}))
    assert r.status == 400
    assert hub.get("/api/models/" + TINY).status == 200


# ----------------------------------------------------------------------------------------------
# faults


def _small_path():
    return "/%s/resolve/main/text-64k-minus-1.txt" % TINY


@pytest.fixture
def faulty(fixture_dir):
    with Emulator(fixture_dir, small_file_redirect=200) as e:
        yield e


def test_fault_status_count_every_method(faulty):
    c = Client(faulty.hub_url)
    faulty.set_faults([{"origin": "hub", "match": "^/api/models/hubfs-test/tiny-model$", "status": 503, "count": 2}])
    assert [c.get("/api/models/" + TINY).status for _ in range(4)] == [503, 503, 200, 200]
    rules = faulty.faults()
    assert rules[0]["applied"] == 2 and rules[0]["matched"] == 4
    faulty.set_faults([{"match": "/tree/", "status": 500, "every": 3}])
    assert [c.get("/api/models/%s/tree/main" % TINY).status for _ in range(6)] == [200, 200, 500, 200, 200, 500]
    faulty.set_faults([{"match": "/resolve/", "status": 502, "method": "HEAD"}])
    assert c.head(_small_path()).status == 502 and c.get(_small_path()).status == 200
    recs = faulty.log()
    assert any(r.get("fault") == 0 and r["status"] == 502 for r in recs)
    faulty.clear_faults()
    assert faulty.faults() == []
    assert c.head(_small_path()).status == 200
    with pytest.raises(EmulatorError):
        faulty.set_faults([{"match": "x", "bogus_field": 1}])
    with pytest.raises(EmulatorError):
        faulty.set_faults([{"match": "(", "status": 500}])
    c.close()


def test_fault_429_ratelimit_headers(faulty):
    c = Client(faulty.hub_url)
    faulty.set_faults([{"match": "/resolve/", "status": 429, "retry_after": 7, "count": 1},
                       {"match": "^/api/", "status": 429, "count": 1}])
    r = c.get(_small_path())
    assert r.status == 429 and r.h["ratelimit"] == '"resolvers";r=0;t=7' and r.h["retry-after"] == "7"
    assert r.h["ratelimit-policy"].startswith('"fixed window";"resolvers";q=')
    r = c.get("/api/models/" + TINY)
    assert r.status == 429 and r.h["ratelimit"] == '"api";r=0;t=1' and "w=300" in r.h["ratelimit-policy"]
    assert c.get(_small_path()).status == 200
    c.close()


def test_fault_probability_is_seeded(faulty):
    c = Client(faulty.hub_url)

    def run():
        faulty.set_faults([{"match": "^/api/models/", "status": 500, "probability": 0.5}], seed=42)
        return [c.get("/api/models/" + TINY).status for _ in range(30)]

    a, b = run(), run()
    assert a == b and 500 in a and 200 in a
    c.close()


def test_fault_delay(faulty):
    c = Client(faulty.hub_url)
    faulty.set_faults([{"match": "^/api/models/", "delay_s": 0.6, "count": 1}])
    t = time.time()
    assert c.get("/api/models/" + TINY).status == 200
    assert time.time() - t >= 0.55
    t = time.time()
    c.get("/api/models/" + TINY)
    assert time.time() - t < 0.5
    c.close()


def test_fault_refuse(faulty):
    c = Client(faulty.hub_url)
    faulty.set_faults([{"match": "^/api/models/", "refuse": True, "count": 1}])
    with pytest.raises((ConnectionError, OSError, Exception)) as ei:
        c.get("/api/models/" + TINY)
    assert not isinstance(ei.value, AssertionError)
    assert c.get("/api/models/" + TINY).status == 200
    c.close()


def _raw_get(base, path, headers=None, timeout=20):
    """GET with the raw socket so that short bodies can be measured. Returns
    (status, headers dict, body bytes, closed_early)."""
    u = urllib.parse.urlparse(base)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        req = "GET %s HTTP/1.1\r\nHost: %s\r\n" % (path, u.netloc)
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        s.sendall((req + "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before headers")
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        h = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            h[k.strip().lower()] = v.strip()
        want = int(h.get("content-length", "0"))
        closed = False
        while len(body) < want:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            body += chunk
        return status, h, body, closed
    finally:
        s.close()


def test_fault_truncate_reset_wrong_length(faulty, fx):
    data = fx.data(TINY, "text-64k-minus-1.txt")
    faulty.set_faults([{"match": "text-64k-minus-1", "truncate": True, "count": 1}])
    st, h, body, closed = _raw_get(faulty.hub_url, _small_path())
    assert st == 200 and int(h["content-length"]) == len(data) and closed and body == data[:len(data) // 2]
    faulty.set_faults([{"match": "text-64k-minus-1", "reset_after_bytes": 1000, "count": 1}])
    st, h, body, closed = _raw_get(faulty.hub_url, _small_path())
    assert closed and len(body) <= 1000 and data.startswith(body)
    faulty.set_faults([{"match": "text-64k-minus-1", "wrong_content_length": True, "count": 1}])
    st, h, body, closed = _raw_get(faulty.hub_url, _small_path())
    assert int(h["content-length"]) == len(data) - 1 and body[:len(data) - 1] == data[:-1]
    faulty.set_faults([{"match": "text-64k-minus-1", "wrong_content_length": len(data) + 100, "count": 1}])
    st, h, body, closed = _raw_get(faulty.hub_url, _small_path())
    assert int(h["content-length"]) == len(data) + 100 and closed and body == data
    # http.client sees the short bodies as errors
    faulty.set_faults([{"match": "text-64k-minus-1", "truncate": True, "count": 1}])
    c = Client(faulty.hub_url)
    with pytest.raises(Exception) as ei:
        c.get(_small_path())
    assert "IncompleteRead" in type(ei.value).__name__ or isinstance(ei.value, ConnectionError)
    assert c.get(_small_path()).body == data
    recs = faulty.log()
    assert [r["bytes"] for r in recs if r.get("fault") == 0][:2] == [len(data) // 2, 1000]
    c.close()


def test_fault_range_as_200_and_wrong_range(faulty, fx):
    data = fx.data(TINY, "text-64k-minus-1.txt")
    c = Client(faulty.hub_url)
    faulty.set_faults([{"match": "text-64k", "range_as_200": True, "count": 1}])
    r = c.get(_small_path(), {"Range": "bytes=100-"})
    assert r.status == 200 and r.body == data and "content-range" not in r.h
    faulty.set_faults([{"match": "text-64k", "wrong_range": True, "count": 2}])
    r = c.get(_small_path(), {"Range": "bytes=100-199"})
    assert r.status == 206
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", r.h["content-range"])
    a, b = int(m.group(1)), int(m.group(2))
    assert a != 100 and r.body == data[a:b + 1] and len(r.body) == 100
    r = c.get(_small_path(), {"Range": "bytes=0-9"})
    assert r.h["content-range"] != "bytes 0-9/%d" % len(data)
    r = c.get(_small_path(), {"Range": "bytes=0-9"})
    assert r.h["content-range"] == "bytes 0-9/%d" % len(data)
    c.close()


def test_fault_corrupt(faulty, fx):
    data = fx.data(TINY, "text-64k-minus-1.txt")
    c = Client(faulty.hub_url)
    faulty.set_faults([{"match": "text-64k", "corrupt": True, "count": 2}])
    r = c.get(_small_path())
    assert r.status == 200 and len(r.body) == len(data) and r.body != data
    r = c.get(_small_path(), {"Range": "bytes=5000-5100"})
    assert len(r.body) == 101 and r.body != data[5000:5101]
    assert c.get(_small_path()).body == data
    c.close()


def test_fault_stall(faulty, fx):
    data = fx.data(TINY, "text-64k-minus-1.txt")
    faulty.set_faults([{"match": "text-64k", "stall_after_bytes": 1000, "stall_s": 1.0, "count": 1}])
    u = urllib.parse.urlparse(faulty.hub_url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % _small_path()).encode())
        t0 = time.time()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, body = buf.split(b"\r\n\r\n", 1)
        s.settimeout(0.5)
        try:
            while len(body) < 1000:
                body += s.recv(65536)
            more = s.recv(65536)  # nothing arrives during the stall
            assert more == b"" and False, "expected a stall"
        except socket.timeout:
            pass
        assert len(body) == 1000
        s.settimeout(10)
        while len(body) < len(data):
            chunk = s.recv(65536)
            assert chunk
            body += chunk
        assert body == data and time.time() - t0 >= 0.95
    finally:
        s.close()


def test_fault_cdn_origin_uses_python_cdn(faulty, fx):
    e = fx.entry(TINY, "model.safetensors")
    data = fx.data(TINY, "model.safetensors")
    hub = Client(faulty.hub_url)
    assert hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"].startswith(faulty.cdn_url)
    faulty.set_faults([{"origin": "cdn", "match": "^/lfs/", "reset_after_bytes": 3 << 20, "count": 1},
                       {"origin": "cdn", "match": "^/lfs/", "status": 500, "count": 1}])
    loc = hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
    assert loc.startswith(faulty.cdn_py_url + "/lfs/" + e["sha256"] + "?")
    base, path = split_url(loc)
    st, h, body, closed = _raw_get(base, path)
    assert st == 200 and closed and len(body) <= 3 << 20 and data.startswith(body)
    assert int(h["content-length"]) == len(data) and h["etag"] and "content-disposition" in h
    r = fetch_url(loc)
    assert r.status == 500
    # resume with Range after the drop
    r = fetch_url(loc, {"Range": "bytes=%d-" % len(body)})
    assert r.status == 206 and body + r.body == data
    r = fetch_url(loc)
    assert r.status == 200 and sha256(r.body) == e["sha256"]
    recs = faulty.wait_log(lambda rs: len([x for x in rs if x["origin"] == "cdn"]) >= 4)
    cdn = [x for x in recs if x["origin"] == "cdn"]
    assert all(x["via"] == "python" and x["auth"] is False for x in cdn)
    assert [x["status"] for x in cdn] == [200, 500, 206, 200]
    # python CDN ranges, 416, 304
    r = fetch_url(loc, {"Range": "bytes=-4"})
    assert r.status == 206 and r.body == data[-4:]
    assert fetch_url(loc, {"Range": "bytes=%d-" % len(data)}).status == 416
    assert fetch_url(loc, {"If-None-Match": r.h["etag"]}).status == 304
    faulty.clear_faults()
    assert hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"].startswith(faulty.cdn_url)
    hub.close()


def test_cdn_faults_range_and_corrupt(faulty, fx):
    data = fx.data(TINY, "model.safetensors")
    hub = Client(faulty.hub_url)
    faulty.set_faults([{"origin": "cdn", "match": "^/lfs/", "range_as_200": True, "count": 1},
                       {"origin": "cdn", "match": "^/lfs/", "corrupt": True, "count": 1},
                       {"origin": "cdn", "match": "^/lfs/", "truncate": True, "count": 1}])
    loc = hub.get("/%s/resolve/main/model.safetensors" % TINY).h["location"]
    r = fetch_url(loc, {"Range": "bytes=1000-1999"})
    assert r.status == 200 and len(r.body) == len(data)
    r = fetch_url(loc, {"Range": "bytes=1000-1999"})
    assert r.status == 206 and len(r.body) == 1000 and r.body != data[1000:2000]
    base, path = split_url(loc)
    st, h, body, closed = _raw_get(base, path)
    assert closed and len(body) == len(data) // 2
    hub.close()


# ----------------------------------------------------------------------------------------------
# lifecycle


def test_serve_cli_endpoints_and_sigterm(fixture_dir, fresh_dir):
    state = fresh_dir / "state"
    proc = subprocess.Popen([sys.executable, os.path.join(HUBEMU_DIR, "hubemu.py"), "serve", "--fixture", fixture_dir,
                             "--state", str(state), "--org-page-size", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = proc.stdout.readline()
        ep = json.loads(line)
        assert json.loads((state / "endpoints.json").read_text()) == ep
        assert ep["pid"] == proc.pid
        with NO_PROXY.open(ep["hub"] + "/api/models?author=hubfs-test", timeout=10) as r:
            assert len(json.loads(r.read())) == 3
        with NO_PROXY.open(ep["cdn"] + "/lfs/" + "0" * 64, timeout=10) as r:
            pytest.fail("unsigned CDN request must fail")
    except urllib.error.HTTPError as e:
        assert e.code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0
    for _ in range(50):
        try:
            os.kill(ep["nginx_pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("nginx still running after SIGTERM")
    assert not (state / "endpoints.json").exists()


def test_emulator_stop_kills_processes(fixture_dir):
    e = Emulator(fixture_dir)
    pid, npid, state = e.pid, e.nginx_pid, e.state_dir
    assert os.path.isdir(state)
    e.stop()
    e.stop()  # idempotent
    for p in (pid, npid):
        for _ in range(50):
            try:
                os.kill(p, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("process %d still alive" % p)
    assert not os.path.exists(state)


def test_emulator_dies_with_parent(fixture_dir, fresh_dir):
    """A test process that is killed hard must not leave the emulator or nginx behind."""
    script = fresh_dir / "child.py"
    script.write_text(
        "import sys, json, time\n"
        "sys.path.insert(0, %r)\n"
        "from hubemu import Emulator\n"
        "e = Emulator(%r, state_dir=%r)\n"
        "print(json.dumps([e.pid, e.nginx_pid]), flush=True)\n"
        "time.sleep(60)\n" % (HUBEMU_DIR, fixture_dir, str(fresh_dir / "st")))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        pids = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
    for p in pids:
        for _ in range(100):
            try:
                os.kill(p, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("process %d survived its parent" % p)


# ----------------------------------------------------------------------------------------------
# demo and bench presets


def _check_sharded(fxd, rid, min_shard_bytes):
    from hubemu_testlib import Fixture
    f = Fixture(fxd)
    c = f.commit(rid)
    index = json.loads(f.data(rid, "model.safetensors.index.json"))
    shards = sorted(p for p in c["files"] if p.endswith(".safetensors"))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    names, total = {}, 0
    for s in shards:
        e = c["files"][s]
        assert e["lfs"] and e["size"] >= min_shard_bytes
        with open(os.path.join(fxd, "objects", e["sha256"]), "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            names[k] = s
            total += v["data_offsets"][1] - v["data_offsets"][0]
        assert max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__") + 8 + n == e["size"]
    assert index["weight_map"] == names
    assert index["metadata"]["total_size"] == total
    assert "model.layers.0.self_attn.q_proj.weight" in names and "lm_head.weight" in names
    return f, c, names


def test_demo_preset():
    d = tempfile.mkdtemp(prefix="hubemu-demo-")
    try:
        t = time.time()
        gen_fixture.generate(os.path.join(d, "fx"), "demo")
        assert time.time() - t < 60
        f, c, names = _check_sharded(os.path.join(d, "fx"), "hubfs-demo/tiny-llama", 64 << 20)
        size = sum(c["files"][p]["size"] for p in c["files"] if p.endswith(".safetensors"))
        assert 200e6 < size < 320e6
        for p in ("config.json", "tokenizer.json", "model.safetensors.index.json"):
            assert p in c["files"]
        hdr = {}
        for s in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
            with open(os.path.join(d, "fx", "objects", c["files"][s]["sha256"]), "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                hdr.update(json.loads(fh.read(n)))
        dtypes = [v["dtype"] for k, v in hdr.items() if k != "__metadata__"]
        assert dtypes.count("BF16") > dtypes.count("F32") > 0
        assert all(hdr[k]["dtype"] == "F32" for k in hdr if k.endswith("layernorm.weight"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bench_preset_small_and_served(monkeypatch):
    monkeypatch.setenv("HUBEMU_BENCH_SHARD_MB", "3")
    d = tempfile.mkdtemp(prefix="hubemu-bench-")
    try:
        fxd = os.path.join(d, "fx")
        gen_fixture.generate(fxd, "bench")
        f, c, names = _check_sharded(fxd, "hubfs-bench/llama-2shard", 3 << 20)
        ds = f.commit("hubfs-bench/small-files", rtype="dataset")
        small = {p: e for p, e in ds["files"].items() if p.endswith(".txt")}
        assert len(small) == 2000
        assert all(2048 <= e["size"] <= 8192 and not e["lfs"] for e in small.values())
        assert len({p.rsplit("/", 1)[0] for p in small}) >= 3
        with Emulator(fxd) as e:
            shard = c["files"]["model-00002-of-00002.safetensors"]
            r = resolve_bytes(e, "/hubfs-bench/llama-2shard/resolve/main/model-00002-of-00002.safetensors",
                              {"Range": "bytes=0-7"})
            assert r.status == 206 and r.h["content-range"].endswith("/%d" % shard["size"])
            path = "/api/datasets/hubfs-bench/small-files/tree/main?recursive=true"
            n = 0
            hub = Client(e.hub_url)
            while path:
                rr = hub.get(path)
                n += sum(1 for x in rr.json() if x["type"] == "file")
                link = rr.h.get("link")
                path = split_url(LINK_RE.search(link).group(1))[1] if link else None
            assert n == 2002
            hub.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
