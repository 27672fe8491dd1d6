"""Fixture loading and git-like queries (revisions, trees, last commits) for the emulator."""

import json
import os
import re
import threading

import gitobj

HEX_RE = re.compile(r"^[0-9a-fA-F]{5,40}$")
TYPES = ("model", "dataset", "space")
PLURAL = {"model": "models", "dataset": "datasets", "space": "spaces"}
SINGULAR = {v: k for k, v in PLURAL.items()}
FILE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


class Commit:
    __slots__ = ("repo", "id", "parents", "title", "message", "date", "authors", "files", "root_tree",
                 "_lock", "_dirs", "_tree_oids", "_last", "_flat_cache", "_entry_cache")

    def __init__(self, repo, d):
        self.repo = repo
        self.id = d["id"]
        self.parents = list(d.get("parents") or [])
        self.title = d.get("title", "")
        self.message = d.get("message", "")
        self.date = d["date"]
        self.authors = list(d.get("authors") or [])
        self.files = d["files"]  # path -> {"size","sha256","oid","lfs",["pointer_size"]}
        self.root_tree = d.get("tree")
        self._lock = threading.Lock()
        self._dirs = None
        self._tree_oids = None
        self._last = None
        self._flat_cache = {}
        self._entry_cache = {}

    # -- directory structure ----------------------------------------------------------------
    def dirs(self):
        """{dir_path: (sorted subdir paths, sorted file paths)}; root is ""."""
        if self._dirs is None:
            with self._lock:
                if self._dirs is None:
                    subdirs = {"": set()}
                    files = {"": []}
                    for path in self.files:
                        parts = path.split("/")
                        d = ""
                        for part in parts[:-1]:
                            sub = part if not d else d + "/" + part
                            subdirs.setdefault(d, set()).add(sub)
                            subdirs.setdefault(sub, set())
                            files.setdefault(sub, [])
                            d = sub
                        files.setdefault(d, []).append(path)
                    self._dirs = {d: (sorted(subdirs[d]), sorted(files.get(d, []))) for d in subdirs}
        return self._dirs

    def tree_oids(self):
        if self._tree_oids is None:
            oids = gitobj.tree_oids({p: e["oid"] for p, e in self.files.items()})
            self._tree_oids = oids
        return self._tree_oids

    def is_dir(self, path):
        return path in self.dirs()

    def last_commits(self):
        """{path (file or dir, "" = root): Commit} most recent commit (first-parent history)
        that changed the path."""
        if self._last is None:
            chain = []
            c = self
            seen = set()
            while c is not None and c.id not in seen:
                seen.add(c.id)
                chain.append(c)
                c = self.repo.commits.get(c.parents[0]) if c.parents else None
            chain.reverse()
            last = {}
            prev_files, prev_trees = {}, {}
            for c in chain:
                trees = c.tree_oids()
                new = {}
                for p, e in c.files.items():
                    pe = prev_files.get(p)
                    if pe is not None and pe["oid"] == e["oid"] and p in last:
                        new[p] = last[p]
                    else:
                        new[p] = c
                for d, oid in trees.items():
                    if prev_trees.get(d) == oid and d in last:
                        new[d] = last[d]
                    else:
                        new[d] = c
                last = new
                prev_files, prev_trees = c.files, trees
            self._last = last
        return self._last

    # -- listing --------------------------------------------------------------------------
    def listing(self, path, recursive):
        """Ordered list of (kind, path) under directory `path` (directories first at each level;
        recursive listings are depth-first pre-order and include directory entries)."""
        key = (path, bool(recursive))
        lst = self._flat_cache.get(key)
        if lst is not None:
            return lst
        dirs = self.dirs()
        out = []

        def walk(d):
            sub, fl = dirs[d]
            for s in sub:
                out.append(("directory", s))
                if recursive:
                    walk(s)
            for f in fl:
                out.append(("file", f))

        walk(path)
        if len(self._flat_cache) > 64:
            self._flat_cache.clear()
        self._flat_cache[key] = out
        return out

    def entry_json(self, kind, path, expand=False):
        base = self._entry_cache.get(path)
        if base is None:
            if kind == "directory":
                base = {"type": "directory", "oid": self.tree_oids()[path], "size": 0, "path": path}
            else:
                e = self.files[path]
                base = {"type": "file", "oid": e["oid"], "size": e["size"], "path": path}
                if e.get("lfs"):
                    base["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": e["pointer_size"]}
            self._entry_cache[path] = base
        if not expand:
            return base
        d = dict(base)
        lc = self.last_commits().get(path)
        if lc is not None:
            d["lastCommit"] = {"id": lc.id, "title": lc.title, "date": lc.date}
        return d


class Repo:
    def __init__(self, d):
        self.type = d["type"]
        if self.type not in TYPES:
            raise ValueError("bad repo type %r" % self.type)
        self.id = d["id"]
        self.mongo_id = d.get("_id") or "0" * 24
        self.aliases = list(d.get("aliases") or [])
        self.private = bool(d.get("private"))
        self.gated = d.get("gated") or False
        self.disabled = bool(d.get("disabled"))
        self.readers = set(d.get("readers") or [])
        self.gated_approved = set(d.get("gated_approved") or [])
        self.created_at = d.get("createdAt") or "2024-01-01T00:00:00.000Z"
        self.default_branch = d.get("default_branch") or "main"
        refs = d.get("refs") or {}
        self.branches = dict(refs.get("branches") or {})
        self.tags = dict(refs.get("tags") or {})
        self.prs = {str(k): v for k, v in (refs.get("pull_requests") or {}).items()}
        self.converts = dict(refs.get("converts") or {})
        self.meta = dict(d.get("meta") or {})
        self.commit_list = [Commit(self, c) for c in d.get("commits") or []]
        self.commits = {c.id: c for c in self.commit_list}
        self._used = None

    @property
    def author(self):
        return self.id.split("/")[0] if "/" in self.id else None

    @property
    def name(self):
        return self.id.split("/")[-1]

    def head(self):
        cid = self.branches.get(self.default_branch)
        return self.commits.get(cid) if cid else None

    def resolve(self, rev):
        """Revision string -> Commit or None. Accepts HEAD, branch, tag, refs/heads/x, refs/tags/x,
        refs/pr/N, refs/convert/x, full or unique-prefix (>= 5 hex chars) commit ids."""
        if rev is None or rev == "":
            return None
        if rev == "HEAD":
            return self.head()
        for table in (self.branches, self.tags):
            if rev in table:
                return self.commits.get(table[rev])
        if rev.startswith("refs/heads/") and rev[11:] in self.branches:
            return self.commits.get(self.branches[rev[11:]])
        if rev.startswith("refs/tags/") and rev[10:] in self.tags:
            return self.commits.get(self.tags[rev[10:]])
        m = re.match(r"^refs/pr/(\d+)$", rev)
        if m:
            cid = self.prs.get(str(int(m.group(1))))
            return self.commits.get(cid) if cid else None
        m = re.match(r"^refs/convert/([\w.-]+)$", rev)
        if m:
            cid = self.converts.get(m.group(1))
            return self.commits.get(cid) if cid else None
        if HEX_RE.match(rev):
            low = rev.lower()
            if len(low) == 40:
                return self.commits.get(low)
            hits = [c for cid, c in self.commits.items() if cid.startswith(low)]
            if len(hits) == 1:
                return hits[0]
        return None

    def used_storage(self):
        if self._used is None:
            seen = {}
            for c in self.commit_list:
                for e in c.files.values():
                    seen[e["sha256"]] = e["size"]
            self._used = sum(seen.values())
        return self._used

    def history(self, commit):
        """First-parent history starting at commit (newest first)."""
        out = []
        seen = set()
        c = commit
        while c is not None and c.id not in seen:
            seen.add(c.id)
            out.append(c)
            c = self.commits.get(c.parents[0]) if c.parents else None
        return out

    def can_read(self, user):
        if not self.private:
            return True
        return user is not None and user["name"] in self.readers

    def gate_ok(self, user):
        if not self.gated:
            return True
        return user is not None and user["name"] in self.gated_approved


class Store:
    def __init__(self, fixture_dir):
        self.dir = os.path.abspath(fixture_dir)
        self.objects_dir = os.path.join(self.dir, "objects")
        with open(os.path.join(self.dir, "repos.json"), encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("format") != "hubemu-fixture":
            raise ValueError("%s is not a hubemu fixture" % fixture_dir)
        self.doc_version = doc.get("version")
        self.preset = doc.get("preset")
        self.users = {u["token"]: u for u in doc.get("users") or []}
        self.users_by_name = {u["name"]: u for u in doc.get("users") or []}
        self.orgs = {o["name"]: o for o in doc.get("orgs") or []}
        self._small = {}
        self._small_bytes = 0
        self.repos = {}  # (type, id) -> Repo
        self.aliases = {}  # (type, alias) -> Repo
        for rd in doc.get("repos") or []:
            r = Repo(rd)
            self.repos[(r.type, r.id)] = r
            for a in r.aliases:
                self.aliases[(r.type, a)] = r

    def lookup(self, rtype, rid):
        """-> (Repo, is_alias) or (None, False)"""
        r = self.repos.get((rtype, rid))
        if r is not None:
            return r, False
        r = self.aliases.get((rtype, rid))
        if r is not None:
            return r, True
        return None, False

    def known_id(self, rtype, rid):
        return (rtype, rid) in self.repos or (rtype, rid) in self.aliases

    def object_path(self, sha256):
        return os.path.join(self.objects_dir, sha256)

    def read_object(self, sha256):
        with open(self.object_path(sha256), "rb") as f:
            return f.read()

    SMALL_CACHE_BUDGET = 256 * 1024 * 1024

    def small_object(self, sha256):
        """Content of a small (<= 64 KiB) object, cached in memory (bounded budget)."""
        data = self._small.get(sha256)
        if data is None:
            data = self.read_object(sha256)
            if self._small_bytes + len(data) <= self.SMALL_CACHE_BUDGET:
                self._small[sha256] = data
                self._small_bytes += len(data)
        return data
