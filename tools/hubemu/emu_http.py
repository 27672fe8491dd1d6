"""HTTP side of the hub emulator: the Hub origin and the Python ("faulty") CDN origin."""

import base64
import email.utils
import hashlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote

from emu_faults import FaultError
from emu_store import FILE_PREFIX, PLURAL, SINGULAR

MAX_BODY = 16 * 1024 * 1024
SEND_CHUNK = 256 * 1024
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
DISABLED_MESSAGE = "Access to this resource is disabled."
API_ACTIONS = {"revision", "tree", "refs", "paths-info", "commits", "auth-check", "treesize",
               "xet-read-token", "preupload", "commit", "discussions", "settings", "resolve",
               "parquet", "croissant", "notebook", "scan", "lfs-files", "super-squash"}
FILE_ACTIONS = ("resolve", "raw")
NOT_FOUND_MESSAGE = "Sorry, we can't find the page you are looking for."


def _print_exc():
    try:
        traceback.print_exc()
        sys.stderr.flush()
    except Exception:
        pass


class FileRef:
    __slots__ = ("path", "size", "mtime")

    def __init__(self, path):
        st = os.stat(path)
        self.path = path
        self.size = st.st_size
        self.mtime = st.st_mtime


class Resp:
    """A response. `source` is bytes or a FileRef; `rng` = (start, end_inclusive) selects a
    slice of it (status 206); `total` is the full representation size."""

    __slots__ = ("status", "headers", "source", "rng", "close", "no_length")

    def __init__(self, status, headers=None, source=b"", rng=None, close=False, no_length=False):
        self.status = status
        self.headers = list(headers or [])
        self.source = source
        self.rng = rng
        self.close = close
        self.no_length = no_length

    @property
    def total(self):
        return self.source.size if isinstance(self.source, FileRef) else len(self.source)

    def body_span(self):
        if self.rng is None:
            return 0, self.total
        return self.rng[0], self.rng[1] + 1 - self.rng[0]

    def set_header(self, name, value):
        low = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low]
        if value is not None:
            self.headers.append((name, value))

    def get_header(self, name):
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return None


def json_resp(obj, status=200, headers=()):
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Resp(status, [("Content-Type", "application/json; charset=utf-8")] + list(headers), body)


def error_resp(status, message, code=None, headers=()):
    h = [("Content-Type", "application/json; charset=utf-8"), ("X-Error-Message", message)]
    if code:
        h.append(("X-Error-Code", code))
    h.extend(headers)
    body = json.dumps({"error": message}).encode("utf-8")
    return Resp(status, h, body)


def parse_range(value, total):
    """-> None (ignore the header: answer 200), "unsat" (416) or (start, end_inclusive).
    Mirrors nginx (max_ranges 1): a header not starting with "bytes=", a multi-range header or
    an empty representation is ignored; a malformed or unsatisfiable single range gives 416."""
    if value is None:
        return None
    v = value.strip()
    if v[:6].lower() != "bytes=" or total == 0:
        return None
    spec = v[6:]
    if "," in spec:
        return None
    m = re.fullmatch(r"\s*(\d*)\s*-\s*(\d*)\s*", spec)
    if not m:
        return "unsat"
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return "unsat"
    if a == "":
        n = int(b)
        if n == 0:
            return "unsat"
        return (max(0, total - n), total - 1)
    start = int(a)
    if start >= total:
        return "unsat"
    if b == "":
        return (start, total - 1)
    end = int(b)
    if end < start:
        return "unsat"
    return (start, min(end, total - 1))


def truthy(v):
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def content_disposition(name):
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("\\", "_")
    return "inline; filename*=UTF-8''%s; filename=\"%s\";" % (quote(name, safe=""), ascii_name)


def etag_matches(header, *etags):
    if not header:
        return False
    if header.strip() == "*":
        return True
    vals = [v.strip() for v in header.split(",")]
    vals = [v[2:] if v.startswith("W/") else v for v in vals]
    return any(e in vals for e in etags if e)


class EmuContext:
    """Shared state of one emulator instance."""

    def __init__(self, store, opts, log, faults):
        self.store = store
        self.opts = opts
        self.log = log
        self.faults = faults
        self.hub_url = None
        self.cdn_url = None  # nginx
        self.cdn_py_url = None  # python CDN
        self.secret = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.started = time.time()

    def cdn_base(self):
        mode = self.opts.cdn_mode
        if mode == "python":
            return self.cdn_py_url
        if mode == "nginx":
            return self.cdn_url
        return self.cdn_py_url if self.faults.has_origin("cdn") else self.cdn_url

    def sign(self, sha256, expires):
        raw = hashlib.md5(("%d/lfs/%s %s" % (expires, sha256, self.secret)).encode()).digest()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def signed_url(self, sha256, filename):
        expires = int(time.time()) + int(self.opts.cdn_expiry_s)
        q = "Expires=%d&Signature=%s&Key-Pair-Id=emu&response-content-disposition=%s" % (
            expires, self.sign(sha256, expires), quote(content_disposition(filename), safe=""))
        return "%s/lfs/%s?%s" % (self.cdn_base(), sha256, q)


class EmuHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, addr, handler, ctx, origin):
        self.ctx = ctx
        self.origin = origin
        super().__init__(addr, handler)

    def handle_error(self, request, client_address):
        # never let a broken connection print a traceback storm; real bugs are logged
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, OSError)):
            return
        _print_exc()


class _Abort(Exception):
    """Close the connection without (further) answering."""


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubemu/1"
    sys_version = ""
    timeout = 300
    wbufsize = 0

    # -- plumbing -------------------------------------------------------------------------
    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):  # silence the default stderr access log
        pass

    def handle_one_request(self):
        self._headers_sent = False
        self.rec = None
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(414)
                self.close_connection = True
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                self.close_connection = True
                return
            self._serve()
        except _Abort:
            self.close_connection = True
        except (TimeoutError, socket.timeout, ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception:
            self.close_connection = True
            _print_exc()
            if not self._headers_sent:
                try:
                    self._write_response(error_resp(500, "Internal emulator error"), None, head_only=False)
                except Exception:
                    pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _Abort()
                try:
                    n = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if n == 0:
                    while True:  # trailers
                        t = self.rfile.readline(8192)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                total += n
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(n))
                self.rfile.readline(8)
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            return None
        if n < 0 or n > MAX_BODY:
            return None
        data = self.rfile.read(n)
        if len(data) != n:
            raise _Abort()
        return data

    def _serve(self):
        t0 = time.time()
        target = self.path
        if target.startswith("http://") or target.startswith("https://"):
            # absolute-form request target
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        raw_path, _, query = target.partition("?")
        self.raw_path = raw_path
        self.query = query
        control = raw_path.startswith("/_emu/") or raw_path == "/_emu"
        h = self.headers
        self.rec = None if control else {
            "origin": self.server.origin,
            "method": self.command,
            "path": raw_path,
            "query": query,
            "range": h.get("Range"),
            "status": None,
            "bytes": 0,
            "auth": h.get("Authorization") is not None,
            "ua": h.get("User-Agent"),
            "accept": h.get("Accept"),
            "accept_encoding": h.get("Accept-Encoding"),
            "t": round(t0, 6),
        }
        log = self.server.ctx.log
        if self.rec is not None:
            if self.server.origin == "cdn":
                self.rec["via"] = "python"
            log.begin()
        try:
            self._serve_inner(control)
        except (_Abort, TimeoutError, socket.timeout, ConnectionError):
            raise
        except Exception:
            self.close_connection = True
            _print_exc()
            if not self._headers_sent:
                try:
                    self._write_response(error_resp(500, "Internal emulator error"), None, head_only=False)
                except Exception:
                    pass
                if self.rec is not None:
                    self.rec["status"] = 500
        finally:
            if self.rec is not None:
                if self.rec.get("status") is None:
                    self.rec["status"] = 0
                self._log_rec()
                log.end()

    def _serve_inner(self, control):
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._finish(error_resp(400, "Bad request body"), None)
            return
        self.body = body
        rule = None
        if not control:
            rule = self.server.ctx.faults.pick(self.server.origin, self.command, self.raw_path)
        if rule is not None:
            self.rec["fault"] = rule.index
            if rule.refuse:
                self.rec["status"] = 0
                self._hard_close(reset=False)
                raise _Abort()
            if rule.delay_s:
                time.sleep(rule.delay_s)
            if rule.status is not None:
                self._finish(self._fault_status(rule), rule)
                return
        resp = self.route()
        if resp is None:
            resp = error_resp(404, NOT_FOUND_MESSAGE)
        self._finish(resp, rule)

    def _fault_status(self, rule):
        status = rule.status
        msg = rule.message or ("Injected fault: HTTP %d" % status)
        headers = []
        if status == 429:
            bucket = rule.ratelimit_bucket or ("resolvers" if "/resolve/" in self.raw_path else
                                               "api" if self.raw_path.startswith("/api/") else "pages")
            t = rule.retry_after if rule.retry_after is not None else 1
            quota = {"api": 1000, "resolvers": 5000, "pages": 200}.get(bucket, 1000)
            headers.append(("RateLimit", '"%s";r=0;t=%d' % (bucket, t)))
            headers.append(("RateLimit-Policy", '"fixed window";"%s";q=%d;w=300' % (bucket, quota)))
        if rule.retry_after is not None:
            headers.append(("Retry-After", str(rule.retry_after)))
        return error_resp(status, msg, headers=headers)

    def _finish(self, resp, rule):
        self._write_response(resp, rule, self.command == "HEAD")

    def _log_rec(self):
        rec = self.rec
        if rec is None or rec.get("_logged"):
            return
        rec["_logged"] = True
        r = dict(rec)
        del r["_logged"]
        r["dur"] = round(time.time() - r["t"], 6)
        self.server.ctx.log.add(r)

    def _hard_close(self, reset):
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def _write_response(self, resp, rule, head_only):
        rec = self.rec
        # range manipulation faults
        if rule is not None and resp.rng is not None and resp.status == 206:
            if rule.range_as_200:
                resp.rng = None
                resp.status = 200
                resp.set_header("Content-Range", None)
            elif rule.wrong_range:
                start, end = resp.rng
                total = resp.total
                n = end - start + 1
                # same length, one byte earlier (or later when the range starts at 0)
                ns = start - 1 if start > 0 else min(1, total - 1)
                resp.rng = (ns, min(ns + n - 1, total - 1))
        if resp.rng is not None and resp.status == 206:
            resp.set_header("Content-Range", "bytes %d-%d/%d" % (resp.rng[0], resp.rng[1], resp.total))
        offset, length = resp.body_span()
        if resp.status in (204, 304) or 100 <= resp.status < 200:
            length = 0
        declared = length
        limit = length
        close_after = resp.close or self.close_connection
        reset = False
        stall_at = None
        corrupt = False
        if rule is not None:
            if rule.wrong_content_length is not None:
                declared = max(0, length - 1) if rule.wrong_content_length is True else rule.wrong_content_length
                close_after = True
            if rule.truncate:
                limit = length // 2
                close_after = True
            if rule.reset_after_bytes is not None:
                limit = min(limit, rule.reset_after_bytes)
                close_after = True
                reset = True
            if rule.stall_after_bytes is not None:
                stall_at = rule.stall_after_bytes
            corrupt = rule.corrupt
        if head_only:
            limit = 0
            declared = length
            close_after = resp.close or self.close_connection
            reset = False
        lines = ["HTTP/1.1 %d %s" % (resp.status, self.responses.get(resp.status, ("Status",))[0])]
        lines.append("Date: " + email.utils.formatdate(usegmt=True))
        lines.append("Server: hubemu")
        for k, v in resp.headers:
            # never let request-derived text (e.g. a decoded revision) split a header
            lines.append("%s: %s" % (k, str(v).replace("\r", " ").replace("\n", " ")))
        if not resp.no_length and resp.status != 304:
            lines.append("Content-Length: %d" % declared)
        if close_after:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if rec is not None:
            rec["status"] = resp.status
        sent = 0
        src = resp.source
        simple = stall_at is None and not corrupt
        if limit == 0:
            self.connection.sendall(head)
            self._headers_sent = True
        elif isinstance(src, (bytes, bytearray)):
            data = bytes(src[offset:offset + limit])
            if corrupt:
                data = _corrupt(data, 0)
            if stall_at is None:
                self.connection.sendall(head + data)
                self._headers_sent = True
                sent = len(data)
            else:
                self.connection.sendall(head)
                self._headers_sent = True
                first = data[:stall_at]
                self.connection.sendall(first)
                sent = len(first)
                if rec is not None:
                    rec["bytes"] = sent
                time.sleep(rule.stall_s)
                self.connection.sendall(data[stall_at:])
                sent = len(data)
        else:
            self.connection.sendall(head)
            self._headers_sent = True
            with open(src.path, "rb") as f:
                if simple:
                    while sent < limit:
                        n = self.connection.sendfile(f, offset + sent, limit - sent)
                        if n == 0:
                            break
                        sent += n
                else:
                    stalled = False
                    pos = 0
                    while pos < limit:
                        n = min(SEND_CHUNK, limit - pos)
                        if stall_at is not None and not stalled and pos < stall_at:
                            n = min(n, stall_at - pos)
                        chunk = os.pread(f.fileno(), n, offset + pos)
                        if not chunk:
                            break
                        if corrupt:
                            chunk = _corrupt(chunk, pos)
                        self.connection.sendall(chunk)
                        pos += len(chunk)
                        sent = pos
                        if stall_at is not None and not stalled and pos >= stall_at:
                            stalled = True
                            if rec is not None:
                                rec["bytes"] = sent
                            time.sleep(rule.stall_s)
        if rec is not None:
            rec["bytes"] = sent
        if close_after and (limit < length or declared != length or reset):
            self._hard_close(reset=reset)
            raise _Abort()

    # -- helpers for subclasses ---------------------------------------------------------------
    def serve_content(self, source, headers, etag=None, allow_304=True, status=200):
        """200 / 206 / 416 / 304 for a full representation `source` (bytes or FileRef)."""
        total = source.size if isinstance(source, FileRef) else len(source)
        inm = self.headers.get("If-None-Match")
        if allow_304 and etag and etag_matches(inm, etag):
            return Resp(304, headers, b"")
        rng = parse_range(self.headers.get("Range"), total)
        if rng == "unsat":
            h = [(k, v) for k, v in headers if k.lower() not in ("content-type",)]
            h.append(("Content-Type", "text/plain; charset=utf-8"))
            h.append(("Content-Range", "bytes */%d" % total))
            return Resp(416, h, b"Requested Range Not Satisfiable\n")
        if rng is None:
            return Resp(status, headers, source)
        return Resp(206, headers, source, rng=rng)


def _corrupt(data, pos):
    """Flip bytes: the first byte of the body and every 4096th byte after it."""
    b = bytearray(data)
    first = (-pos) % 4096
    for i in range(first, len(b), 4096):
        b[i] ^= 0xFF
    return bytes(b)


def text_content_type(data):
    try:
        data.decode("utf-8")
        return "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        return "application/octet-stream"


class HubHandler(BaseHandler):
    """The Hub origin (API, resolve/raw, resolve-cache, /_emu control routes)."""

    def route(self):
        ctx = self.server.ctx
        raw = self.raw_path
        if raw.startswith("/_emu"):
            return self.control()
        segs = raw.split("/")[1:]
        if not segs or segs == [""]:
            return Resp(200, [("Content-Type", "text/plain; charset=utf-8")], b"hubemu hub origin\n")
        self.user = None
        auth = self.headers.get("Authorization")
        if auth is not None:
            m = re.match(r"^\s*Bearer\s+(\S+)\s*$", auth, re.I)
            user = ctx.store.users.get(m.group(1)) if m else None
            if user is None:
                return error_resp(401, INVALID_CREDENTIALS)
            self.user = user
        if segs[0] == "api":
            return self.api(segs[1:])
        return self.file_route(segs)

    # -- control API ------------------------------------------------------------------------
    def control(self):
        ctx = self.server.ctx
        p = self.raw_path.rstrip("/")
        m = self.command
        if p == "/_emu/health" and m in ("GET", "HEAD"):
            return json_resp({"ok": True, "hub": ctx.hub_url, "cdn": ctx.cdn_url, "cdn_py": ctx.cdn_py_url})
        if p == "/_emu/config" and m == "GET":
            return json_resp({"hub": ctx.hub_url, "cdn": ctx.cdn_url, "cdn_py": ctx.cdn_py_url,
                              "options": vars(ctx.opts) if hasattr(ctx.opts, "__dict__") else {},
                              "fixture": ctx.store.dir, "preset": ctx.store.preset})
        if p == "/_emu/log":
            if m == "GET":
                q = parse_qs(self.query)
                recs = ctx.log.snapshot()
                if "origin" in q:
                    recs = [r for r in recs if r.get("origin") == q["origin"][0]]
                return json_resp(recs)
            if m == "DELETE":
                ctx.log.clear()
                return json_resp({"ok": True})
        if p == "/_emu/log/clear" and m == "POST":
            ctx.log.clear()
            return json_resp({"ok": True})
        if p == "/_emu/refs" and m == "POST":
            # Simulates a push: move a branch of a repo to one of its existing commits.
            try:
                body = json.loads(self.body.decode("utf-8") or "{}")
                repo, _ = ctx.store.lookup(body.get("type", "model"), body["id"])
                branch, commit = body["branch"], body["commit"]
            except (ValueError, KeyError, TypeError):
                return error_resp(400, "refs: need JSON {type, id, branch, commit}")
            if repo is None or commit not in repo.commits:
                return error_resp(404, "refs: unknown repo or commit")
            repo.branches[branch] = commit
            return json_resp({"ok": True})
        if p == "/_emu/faults":
            if m == "GET":
                return json_resp(ctx.faults.to_json())
            if m == "DELETE":
                ctx.faults.clear()
                return json_resp({"ok": True})
            if m in ("POST", "PUT"):
                try:
                    payload = json.loads(self.body.decode("utf-8") or "[]")
                except ValueError:
                    return error_resp(400, "faults: body is not JSON")
                try:
                    ctx.faults.set(payload)
                except FaultError as e:
                    return error_resp(400, "faults: %s" % e)
                return json_resp({"ok": True, "rules": ctx.faults.to_json()})
        return error_resp(404, "unknown control route")

    # -- access control -------------------------------------------------------------------
    def repo_access(self, rtype, rid, content):
        """-> (repo, is_alias, None) or (None, False, error Resp)"""
        ctx = self.server.ctx
        repo, alias = ctx.store.lookup(rtype, rid)
        user = self.user
        if repo is None or not repo.can_read(user):
            if user is None:
                return None, False, error_resp(401, "Invalid username or password.", "RepoNotFound")
            return None, False, error_resp(404, "Repository not found", "RepoNotFound")
        if repo.disabled:
            return None, False, error_resp(403, DISABLED_MESSAGE)
        if content and not repo.gate_ok(user):
            kind = repo.type
            if user is None:
                msg = ("Access to %s %s is restricted. You must have access to it and be authenticated "
                       "to access it. Please log in." % (kind, repo.id))
                return None, False, error_resp(401, msg, "GatedRepo")
            msg = ("Access to %s %s is restricted and you are not in the authorized list. Visit %s/%s%s to "
                   "ask for access." % (kind, repo.id, ctx.hub_url, FILE_PREFIX[repo.type], repo.id))
            return None, False, error_resp(403, msg, "GatedRepo")
        return repo, alias, None

    def take_rev(self, segs, i):
        """Revision segment at segs[i] (raw) -> (revision, next index). With --lenient-refs an
        unencoded refs/pr/N or refs/convert/X spanning three segments is accepted too."""
        if i >= len(segs):
            return None, i
        raw = segs[i]
        if self.server.ctx.opts.lenient_refs and raw == "refs" and i + 2 < len(segs):
            kind, val = segs[i + 1], segs[i + 2]
            if kind == "pr" and val.isdigit():
                return "refs/pr/" + val, i + 3
            if kind == "convert" and val:
                return "refs/convert/" + unquote(val), i + 3
        return unquote(raw), i + 1

    def resolve_rev(self, repo, rev):
        """-> (commit, None) or (None, error)"""
        c = repo.resolve(rev)
        if c is None:
            return None, error_resp(404, "Invalid rev id: %s" % rev, "RevisionNotFound")
        return c, None

    @staticmethod
    def entry_not_found(commit, msg="Entry not found"):
        return error_resp(404, msg, "EntryNotFound", headers=[("X-Repo-Commit", commit.id)])

    # -- /api ---------------------------------------------------------------------------------
    def split_repo_id(self, rtype, segs, actions):
        store = self.server.ctx.store
        d = [unquote(s) for s in segs[:2]]
        if len(segs) >= 2 and store.known_id(rtype, d[0] + "/" + d[1]):
            return d[0] + "/" + d[1], 2
        if len(segs) >= 1 and store.known_id(rtype, d[0]):
            return d[0], 1
        if len(segs) >= 2 and segs[1] not in actions:
            return d[0] + "/" + d[1], 2
        return (d[0] if d else ""), 1

    def api(self, segs):
        m = self.command
        if not segs:
            return None
        if segs[0] == "whoami-v2" and len(segs) == 1 and m in ("GET", "HEAD"):
            return self.whoami()
        if segs[0] in SINGULAR and len(segs) == 1 and m in ("GET", "HEAD"):
            return self.list_repos(SINGULAR[segs[0]])
        if segs[0] == "resolve-cache" and len(segs) >= 2 and segs[1] in SINGULAR and m in ("GET", "HEAD"):
            return self.resolve_cache(SINGULAR[segs[1]], segs[2:])
        if segs[0] not in SINGULAR or len(segs) < 2:
            return None
        rtype = SINGULAR[segs[0]]
        rest = segs[1:]
        rid, n = self.split_repo_id(rtype, rest, API_ACTIONS)
        action = rest[n] if len(rest) > n else None
        if action == "":
            action = None if len(rest) == n + 1 else action
        content = action in ("auth-check", "xet-read-token")
        repo, _alias, err = self.repo_access(rtype, rid, content)
        if err is not None:
            return err
        args = rest[n + 1:]
        if action is None and m in ("GET", "HEAD"):
            return self.repo_info(repo, repo.default_branch)
        if action == "revision" and m in ("GET", "HEAD"):
            rev, j = self.take_rev(args, 0)
            if rev is None:
                return None
            if j != len(args):
                # an unencoded "refs/pr/1" is read as revision "refs" (as the Hub does)
                if repo.resolve(rev) is None:
                    return error_resp(404, "Invalid rev id: %s" % rev, "RevisionNotFound")
                return None
            return self.repo_info(repo, rev)
        if action == "tree" and m in ("GET", "HEAD"):
            return self.tree(repo, args)
        if action == "treesize" and m in ("GET", "HEAD"):
            return self.treesize(repo, args)
        if action == "paths-info" and m == "POST":
            return self.paths_info(repo, args)
        if action == "refs" and m in ("GET", "HEAD") and not args:
            return self.refs(repo)
        if action == "commits" and m in ("GET", "HEAD"):
            return self.commits(repo, args)
        if action == "auth-check" and m in ("GET", "HEAD") and not args:
            return json_resp({"ok": True, "id": repo.id})
        if action == "xet-read-token":
            return error_resp(404, "Xet is not enabled for this repository (hubemu has no xet mode)")
        return None

    def query_params(self):
        return parse_qs(self.query, keep_blank_values=True)

    def whoami(self):
        ctx = self.server.ctx
        u = self.user
        if u is None:
            return error_resp(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": o, "fullname": ctx.store.orgs.get(o, {}).get("fullname", o),
                 "roleInOrg": "admin", "isEnterprise": False, "avatarUrl": ""} for o in u.get("orgs", [])]
        return json_resp({
            "type": "user", "id": hashlib.sha1(u["name"].encode()).hexdigest()[:24], "name": u["name"],
            "fullname": u.get("fullname", u["name"]), "email": u.get("email"), "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "", "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "hubemu", "role": "read",
                                                              "createdAt": "2024-01-01T00:00:00.000Z"}},
        })

    def link_next(self, cursor_value, param="cursor"):
        ctx = self.server.ctx
        parts = [p for p in self.query.split("&") if p and not p.startswith(param + "=")]
        parts.append("%s=%s" % (param, cursor_value))
        return ("Link", '<%s%s?%s>; rel="next"' % (ctx.hub_url, self.raw_path, "&".join(parts)))

    @staticmethod
    def encode_cursor(offset):
        return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")

    @staticmethod
    def decode_cursor(cur):
        try:
            pad = "=" * (-len(cur) % 4)
            d = json.loads(base64.urlsafe_b64decode(cur + pad).decode())
            o = int(d["o"])
            if o < 0:
                raise ValueError
            return o
        except Exception:
            return None

    def page_limit(self, q, default):
        lim = default
        if "limit" in q:
            try:
                v = int(q["limit"][0])
                if v > 0:
                    lim = min(v, default)
            except ValueError:
                pass
        return lim

    def list_repos(self, rtype):
        ctx = self.server.ctx
        q = self.query_params()
        author = q.get("author", [None])[0]
        search = (q.get("search", [None])[0] or "").lower()
        items = []
        for r in ctx.store.repos.values():
            if r.type != rtype or not r.can_read(self.user):
                continue
            if author and r.author != author:
                continue
            if search and search not in r.id.lower():
                continue
            if any(t not in r.meta.get("tags", []) for t in q.get("filter", [])):
                continue
            if q.get("pipeline_tag") and r.meta.get("pipeline_tag") != q["pipeline_tag"][0]:
                continue
            items.append(r)
        items.sort(key=lambda r: r.id.lower())
        offset = 0
        if "cursor" in q:
            offset = self.decode_cursor(q["cursor"][0])
            if offset is None:
                return error_resp(400, "Invalid cursor")
        ps = self.page_limit(q, ctx.opts.org_page_size)
        page = items[offset:offset + ps]
        out = []
        for r in page:
            head = r.head()
            d = {"_id": r.mongo_id, "id": r.id, "author": r.author, "private": r.private, "gated": r.gated,
                 "disabled": r.disabled, "downloads": r.meta.get("downloads", 0), "likes": r.meta.get("likes", 0),
                 "tags": r.meta.get("tags", []), "createdAt": r.created_at,
                 "lastModified": head.date if head else r.created_at, "sha": head.id if head else None}
            if rtype == "model":
                d["modelId"] = r.id
                if r.meta.get("library_name"):
                    d["library_name"] = r.meta["library_name"]
                if r.meta.get("pipeline_tag"):
                    d["pipeline_tag"] = r.meta["pipeline_tag"]
            if rtype == "space":
                d["sdk"] = r.meta.get("sdk", "static")
            out.append(d)
        headers = []
        if offset + ps < len(items):
            headers.append(self.link_next(self.encode_cursor(offset + ps)))
        return json_resp(out, headers=headers)

    def repo_info(self, repo, rev):
        commit, err = self.resolve_rev(repo, rev)
        if err is not None:
            return err
        q = self.query_params()
        blobs = truthy(q.get("blobs", ["false"])[0])
        siblings = []
        for p in sorted(commit.files):
            s = {"rfilename": p}
            if blobs:
                e = commit.files[p]
                s["size"] = e["size"]
                s["blobId"] = e["oid"]
                if e.get("lfs"):
                    s["lfs"] = {"size": e["size"], "sha256": e["sha256"], "pointerSize": e["pointer_size"]}
            siblings.append(s)
        meta = repo.meta
        d = {
            "_id": repo.mongo_id, "id": repo.id, "author": repo.author, "sha": commit.id,
            "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
            "gated": repo.gated, "disabled": repo.disabled, "downloads": meta.get("downloads", 0),
            "likes": meta.get("likes", 0), "tags": meta.get("tags", []), "siblings": siblings,
            "usedStorage": repo.used_storage(),
        }
        if "cardData" in meta:
            d["cardData"] = meta["cardData"]
        if repo.type == "model":
            d["modelId"] = repo.id
            for k in ("library_name", "pipeline_tag"):
                if meta.get(k):
                    d[k] = meta[k]
            d["spaces"] = []
            if meta.get("safetensors"):
                d["safetensors"] = meta["safetensors"]
        elif repo.type == "dataset":
            d["description"] = meta.get("description", "")
            d["citation"] = meta.get("citation", "")
            d["paperswithcode_id"] = None
        elif repo.type == "space":
            d["sdk"] = meta.get("sdk", "static")
            d["subdomain"] = repo.id.replace("/", "-").replace(".", "-").lower()
            d["host"] = "%s/spaces/%s" % (self.server.ctx.hub_url, repo.id)
            d["models"] = []
            d["datasets"] = []
        return json_resp(d)

    def tree(self, repo, args):
        ctx = self.server.ctx
        rev, j = self.take_rev(args, 0)
        if rev is None:
            return None
        commit, err = self.resolve_rev(repo, rev)
        if err is not None:
            return err
        path = unquote("/".join(args[j:])).strip("/")
        if path and not commit.is_dir(path):
            return self.entry_not_found(commit, "Entry not found: %s" % path if path not in commit.files
                                        else "%s is a file, not a directory" % path)
        q = self.query_params()
        recursive = truthy(q.get("recursive", ["false"])[0])
        expand = truthy(q.get("expand", ["false"])[0])
        offset = 0
        if "cursor" in q:
            offset = self.decode_cursor(q["cursor"][0])
            if offset is None:
                return error_resp(400, "Invalid cursor")
        ps = self.page_limit(q, ctx.opts.expand_page_size if expand else ctx.opts.page_size)
        lst = commit.listing(path, recursive)
        page = lst[offset:offset + ps]
        out = [commit.entry_json(kind, p, expand) for kind, p in page]
        headers = []
        if offset + ps < len(lst):
            headers.append(self.link_next(self.encode_cursor(offset + ps)))
        return json_resp(out, headers=headers)

    def treesize(self, repo, args):
        rev, j = self.take_rev(args, 0)
        if rev is None:
            return None
        commit, err = self.resolve_rev(repo, rev)
        if err is not None:
            return err
        path = unquote("/".join(args[j:])).strip("/")
        if path and not commit.is_dir(path):
            return self.entry_not_found(commit)
        prefix = path + "/" if path else ""
        size = sum(e["size"] for p, e in commit.files.items() if p.startswith(prefix))
        return json_resp({"path": path, "size": size})

    def paths_info(self, repo, args):
        rev, j = self.take_rev(args, 0)
        if rev is None or j != len(args):
            return None
        commit, err = self.resolve_rev(repo, rev)
        if err is not None:
            return err
        ctype = (self.headers.get("Content-Type") or "").lower()
        paths, expand = None, False
        body = self.body or b""
        try:
            if "json" in ctype or (body[:1] in (b"{", b"[") and "form" not in ctype):
                obj = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(obj, dict):
                    return error_resp(400, "paths-info: expected a JSON object")
                paths = obj.get("paths")
                expand = obj.get("expand", False)
            else:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
                paths = form.get("paths", [])
                expand = form.get("expand", ["false"])[-1]
        except (ValueError, UnicodeDecodeError):
            return error_resp(400, "paths-info: malformed body")
        if paths is None:
            q = self.query_params()
            paths = q.get("paths", [])
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return error_resp(400, "paths-info: 'paths' must be a string or a list of strings")
        if len(paths) > 2000:
            return error_resp(400, "paths-info: at most 2000 paths")
        expand = expand is True or truthy(expand)
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(commit.entry_json("file", p, expand))
            elif p and commit.is_dir(p):
                out.append(commit.entry_json("directory", p, expand))
        return json_resp(out)

    def refs(self, repo):
        q = self.query_params()

        def items(table, prefix):
            return [{"name": k, "ref": prefix + k, "targetCommit": v} for k, v in sorted(table.items())]

        d = {"branches": items(repo.branches, "refs/heads/"), "converts": items(repo.converts, "refs/convert/"),
             "tags": items(repo.tags, "refs/tags/")}
        if truthy(q.get("include_prs", ["false"])[0]):
            d["pullRequests"] = [{"name": k, "ref": "refs/pr/" + k, "targetCommit": v}
                                 for k, v in sorted(repo.prs.items(), key=lambda kv: int(kv[0]))]
        return json_resp(d)

    def commits(self, repo, args):
        rev, j = self.take_rev(args, 0)
        if rev is None or j != len(args):
            return None
        commit, err = self.resolve_rev(repo, rev)
        if err is not None:
            return err
        q = self.query_params()
        hist = repo.history(commit)
        try:
            p = max(0, int(q.get("p", ["0"])[0]))
        except ValueError:
            p = 0
        try:
            ps = max(1, min(int(q.get("limit", ["50"])[0]), 1000))
        except ValueError:
            ps = 50
        page = hist[p * ps:(p + 1) * ps]
        out = [{"id": c.id, "title": c.title, "message": c.message, "date": c.date,
                "authors": [{"user": a, "avatar": ""} for a in c.authors]} for c in page]
        headers = [("X-Total-Count", str(len(hist)))]
        if (p + 1) * ps < len(hist):
            headers.append(self.link_next(str(p + 1), param="p"))
        return json_resp(out, headers=headers)

    # -- files ---------------------------------------------------------------------------------
    def file_route(self, segs):
        ctx = self.server.ctx
        if self.command not in ("GET", "HEAD"):
            return None
        rtype = "model"
        rest = segs
        if segs[0] in ("datasets", "spaces") and len(segs) > 1:
            rtype = SINGULAR[segs[0]]
            rest = segs[1:]
        store = ctx.store
        n = None
        if len(rest) >= 3 and rest[2] in FILE_ACTIONS and (
                store.known_id(rtype, unquote(rest[0]) + "/" + unquote(rest[1])) or rest[1] not in FILE_ACTIONS):
            n = 2
        elif len(rest) >= 2 and rest[1] in FILE_ACTIONS:
            n = 1
        if n is None:
            return None
        rid = "/".join(unquote(s) for s in rest[:n])
        action = rest[n]
        repo, alias, err = self.repo_access(rtype, rid, content=True)
        if err is not None:
            return err
        if alias:
            loc = "/" + FILE_PREFIX[rtype] + quote(repo.id, safe="/") + "/" + "/".join(rest[n:])
            if self.query:
                loc += "?" + self.query
            return Resp(307, [("Location", loc), ("Content-Type", "text/plain; charset=utf-8")],
                        ("Temporary Redirect. Redirecting to %s" % loc).encode())
        rev, j = self.take_rev(rest, n + 1)
        if rev is None:
            return None
        commit, err = self.resolve_rev(repo, rev)
        if err is not None:
            return err
        path = unquote("/".join(rest[j:]))
        entry = commit.files.get(path)
        if entry is None:
            return self.entry_not_found(commit)
        if action == "raw":
            return self.serve_raw(repo, commit, path, entry)
        return self.serve_resolve(repo, commit, path, entry, allow_redirect=True)

    def resolve_cache(self, rtype, segs):
        store = self.server.ctx.store
        n = None
        for k in (2, 1):
            if len(segs) > k and store.known_id(rtype, "/".join(unquote(s) for s in segs[:k])):
                n = k
                break
        if n is None:
            n = 2 if len(segs) > 2 else 1
        rid = "/".join(unquote(s) for s in segs[:n])
        repo, alias, err = self.repo_access(rtype, rid, content=True)
        if err is not None:
            return err
        if len(segs) <= n:
            return None
        rev = unquote(segs[n])
        commit = repo.commits.get(rev.lower()) if len(rev) == 40 else None
        if commit is None:
            return error_resp(404, "Invalid rev id: %s" % rev, "RevisionNotFound")
        path = unquote("/".join(segs[n + 1:]))
        entry = commit.files.get(path)
        if entry is None:
            return self.entry_not_found(commit)
        return self.serve_resolve(repo, commit, path, entry, allow_redirect=False)

    def serve_raw(self, repo, commit, path, entry):
        store = self.server.ctx.store
        if entry.get("lfs"):
            from gitobj import lfs_pointer
            source = lfs_pointer(entry["sha256"], entry["size"])
        elif entry["size"] <= 65536:
            source = store.small_object(entry["sha256"])
        else:
            source = FileRef(store.object_path(entry["sha256"]))
        etag = '"%s"' % entry["oid"]
        headers = [("X-Repo-Commit", commit.id), ("ETag", etag), ("Accept-Ranges", "bytes"),
                   ("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Disposition", content_disposition(path.rsplit("/", 1)[-1])),
                   ("Vary", "Origin, Accept")]
        return self.serve_content(source, headers, etag=etag, allow_304=False)

    def serve_resolve(self, repo, commit, path, entry, allow_redirect):
        ctx = self.server.ctx
        store = ctx.store
        name = path.rsplit("/", 1)[-1]
        etag = '"%s"' % entry["oid"]
        base = [("X-Repo-Commit", commit.id), ("Accept-Ranges", "bytes"), ("Vary", "Origin, Accept")]
        if entry.get("lfs"):
            linked = '"%s"' % entry["sha256"]
            h = base + [("ETag", etag), ("X-Linked-Etag", linked), ("X-Linked-Size", str(entry["size"]))]
            if etag_matches(self.headers.get("If-None-Match"), etag, linked):
                return Resp(304, h, b"")
            loc = ctx.signed_url(entry["sha256"], name)
            h += [("Location", loc), ("Content-Type", "text/plain; charset=utf-8")]
            return Resp(302, h, ("Found. Redirecting to %s" % loc).encode())
        if allow_redirect and ctx.opts.small_file_redirect == 307:
            if etag_matches(self.headers.get("If-None-Match"), etag):
                return Resp(304, base + [("ETag", etag)], b"")
            q_path = quote(path, safe="/")
            orig = "/%s%s/resolve/%s/%s" % (FILE_PREFIX[repo.type], repo.id, quote(self._rev_text(), safe=""), q_path)
            loc = "/api/resolve-cache/%s/%s/%s/%s?%s=&etag=%s" % (
                PLURAL[repo.type], repo.id, commit.id, q_path, quote(orig, safe=""), quote(etag, safe=""))
            h = base + [("ETag", etag), ("Location", loc), ("Content-Type", "text/plain; charset=utf-8")]
            return Resp(307, h, ("Temporary Redirect. Redirecting to %s" % loc).encode())
        if entry["size"] <= 65536:
            source = store.small_object(entry["sha256"])
            ctype = text_content_type(source)
        else:
            source = FileRef(store.object_path(entry["sha256"]))
            ctype = "application/octet-stream"
        h = base + [("ETag", etag), ("Content-Type", ctype), ("Content-Disposition", content_disposition(name))]
        return self.serve_content(source, h, etag=etag)

    def _rev_text(self):
        # revision text as requested (used only to build the informational resolve-cache query)
        segs = self.raw_path.split("/")
        for i, s in enumerate(segs):
            if s in FILE_ACTIONS and i + 1 < len(segs):
                return unquote(segs[i + 1])
        return "main"


class CdnHandler(BaseHandler):
    """Python CDN origin: /lfs/<sha256>?Expires=&Signature=... (used when CDN faults are set)."""

    def route(self):
        ctx = self.server.ctx
        if self.raw_path.startswith("/_emu"):
            return error_resp(404, "control routes live on the hub port")
        m = re.fullmatch(r"/lfs/([0-9a-f]{64})", self.raw_path)
        if not m or self.command not in ("GET", "HEAD"):
            return Resp(404, [("Content-Type", "text/plain")], b"Not Found\n")
        if ctx.opts.cdn_reject_auth and self.headers.get("Authorization") is not None:
            return Resp(400, [("Content-Type", "text/plain")], b"Authorization header not allowed on signed URLs\n")
        sha = m.group(1)
        q = parse_qs(self.query, keep_blank_values=True)
        try:
            expires = int(q.get("Expires", [""])[0])
        except ValueError:
            expires = None
        sig = q.get("Signature", [""])[0]
        if expires is None or sig != ctx.sign(sha, expires) or expires < int(time.time()):
            return Resp(403, [("Content-Type", "application/xml")],
                        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                        b"<Message>Access denied</Message></Error>\n")
        path = ctx.store.object_path(sha)
        try:
            ref = FileRef(path)
        except FileNotFoundError:
            return Resp(404, [("Content-Type", "text/plain")], b"Not Found\n")
        etag = '"%x-%x"' % (int(ref.mtime), ref.size)
        headers = [("Content-Type", "application/octet-stream"),
                   ("Last-Modified", email.utils.formatdate(ref.mtime, usegmt=True)),
                   ("ETag", etag), ("Accept-Ranges", "bytes")]
        cd = q.get("response-content-disposition", [None])[0]
        if cd:
            cd = cd.replace("\r", " ").replace("\n", " ")
            try:
                cd.encode("latin-1")
            except UnicodeEncodeError:
                cd = cd.encode("ascii", "replace").decode()
            headers.append(("Content-Disposition", cd))
        return self.serve_content(ref, headers, etag=etag)


def start_server(ctx, port, origin):
    handler = HubHandler if origin == "hub" else CdnHandler
    srv = EmuHTTPServer(("127.0.0.1", port), handler, ctx, origin)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                         name="hubemu-%s" % origin)
    t.start()
    return srv, t
