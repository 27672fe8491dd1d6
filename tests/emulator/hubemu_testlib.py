"""Helpers shared by the hub emulator tests (fixture access, a no-redirect HTTP client)."""

import hashlib
import http.client
import json
import os
import sys
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HUBEMU_DIR = os.path.join(ROOT, "tools", "hubemu")
if HUBEMU_DIR not in sys.path:
    sys.path.insert(0, HUBEMU_DIR)


class Fixture:
    """Read access to a generated fixture (repos.json + objects/)."""

    def __init__(self, path):
        self.dir = path
        with open(os.path.join(path, "repos.json"), encoding="utf-8") as f:
            self.doc = json.load(f)
        self.repos = {(r["type"], r["id"]): r for r in self.doc["repos"]}

    def repo(self, rid, rtype="model"):
        return self.repos[(rtype, rid)]

    def commit(self, rid, rev="main", rtype="model"):
        r = self.repo(rid, rtype)
        refs = r["refs"]
        cid = (refs["branches"].get(rev) or refs["tags"].get(rev) or refs["converts"].get(rev.replace("refs/convert/", ""))
               or (refs["pull_requests"].get(rev.split("/")[-1]) if rev.startswith("refs/pr/") else None) or rev)
        for c in r["commits"]:
            if c["id"] == cid:
                return c
        raise KeyError(rev)

    def entry(self, rid, path, rev="main", rtype="model"):
        return self.commit(rid, rev, rtype)["files"][path]

    def data(self, rid, path, rev="main", rtype="model"):
        e = self.entry(rid, path, rev, rtype)
        with open(os.path.join(self.dir, "objects", e["sha256"]), "rb") as f:
            return f.read()


class Client:
    """Tiny http.client wrapper: never follows redirects, returns (status, headers, body)."""

    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def request(self, method, path, headers=None, body=None, keepalive=True):
        if self.conn is None or not keepalive:
            if self.conn is not None:
                self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return Response(r.status, r.getheaders(), data)

    def get(self, path, headers=None):
        return self.request("GET", path, headers)

    def head(self, path, headers=None):
        return self.request("HEAD", path, headers)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers_list = headers
        self.h = {}
        for k, v in headers:
            self.h[k.lower()] = v
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.h, self.body[:200])


def split_url(url):
    u = urllib.parse.urlparse(url)
    base = "%s://%s" % (u.scheme, u.netloc)
    path = u.path + ("?" + u.query if u.query else "")
    return base, path


def sha256(data):
    return hashlib.sha256(data).hexdigest()
