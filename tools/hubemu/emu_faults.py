"""Fault rules and the request log of the hub emulator."""

import http.client
import json
import os
import random
import re
import threading
import time

RULE_FIELDS = {
    "origin", "match", "method", "status", "count", "every", "probability", "delay_s",
    "stall_after_bytes", "stall_s", "reset_after_bytes", "truncate", "wrong_content_length",
    "range_as_200", "wrong_range", "corrupt", "retry_after", "refuse", "message", "ratelimit_bucket",
    "name",
}


class FaultError(ValueError):
    pass


def _num(d, key, typ, minimum=None):
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FaultError("%s must be a number" % key)
    if typ is int:
        if int(v) != v:
            raise FaultError("%s must be an integer" % key)
        v = int(v)
    else:
        v = float(v)
    if minimum is not None and v < minimum:
        raise FaultError("%s must be >= %s" % (key, minimum))
    return v


class FaultRule:
    def __init__(self, d, index):
        if not isinstance(d, dict):
            raise FaultError("each rule must be a JSON object")
        unknown = set(d) - RULE_FIELDS
        if unknown:
            raise FaultError("unknown rule field(s): %s" % ", ".join(sorted(unknown)))
        self.index = index
        self.spec = dict(d)
        self.name = d.get("name")
        self.origin = d.get("origin", "hub")
        if self.origin not in ("hub", "cdn"):
            raise FaultError("origin must be 'hub' or 'cdn'")
        try:
            self.regex = re.compile(d.get("match") or "")
        except re.error as e:
            raise FaultError("bad match regex: %s" % e)
        m = d.get("method")
        if m is None:
            self.methods = None
        elif isinstance(m, str):
            self.methods = {m.upper()}
        elif isinstance(m, list) and all(isinstance(x, str) for x in m):
            self.methods = {x.upper() for x in m}
        else:
            raise FaultError("method must be a string or a list of strings")
        self.status = _num(d, "status", int, 100)
        if self.status is not None and self.status > 599:
            raise FaultError("status must be < 600")
        self.count = _num(d, "count", int, 0)
        self.every = _num(d, "every", int, 1)
        self.probability = _num(d, "probability", float, 0.0)
        if self.probability is not None and self.probability > 1:
            raise FaultError("probability must be <= 1")
        self.delay_s = _num(d, "delay_s", float, 0.0)
        self.stall_after_bytes = _num(d, "stall_after_bytes", int, 0)
        self.stall_s = _num(d, "stall_s", float, 0.0)
        if self.stall_s is None:
            self.stall_s = 30.0
        self.reset_after_bytes = _num(d, "reset_after_bytes", int, 0)
        self.retry_after = _num(d, "retry_after", int, 0)
        wcl = d.get("wrong_content_length")
        if wcl is None or wcl is False:
            self.wrong_content_length = None
        elif wcl is True:
            self.wrong_content_length = True
        elif isinstance(wcl, int) and not isinstance(wcl, bool) and wcl >= 0:
            self.wrong_content_length = int(wcl)
        else:
            raise FaultError("wrong_content_length must be true or a non-negative integer")
        for flag in ("truncate", "range_as_200", "wrong_range", "corrupt", "refuse"):
            v = d.get(flag, False)
            if not isinstance(v, bool):
                raise FaultError("%s must be a boolean" % flag)
            setattr(self, flag, v)
        self.message = d.get("message")
        if self.message is not None and not isinstance(self.message, str):
            raise FaultError("message must be a string")
        self.ratelimit_bucket = d.get("ratelimit_bucket")
        self.matched = 0
        self.applied = 0

    def to_json(self):
        d = dict(self.spec)
        d["index"] = self.index
        d["matched"] = self.matched
        d["applied"] = self.applied
        return d


class FaultSet:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.rng = random.Random(0)

    def set(self, payload):
        """payload: a list of rules, or {"rules": [...], "seed": int}. Replaces all rules."""
        seed = 0
        if isinstance(payload, dict):
            seed = payload.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise FaultError("seed must be an integer")
            payload = payload.get("rules", [])
        if not isinstance(payload, list):
            raise FaultError("expected a JSON list of rules")
        rules = [FaultRule(d, i) for i, d in enumerate(payload)]
        with self.lock:
            self.rules = rules
            self.rng = random.Random(seed)

    def clear(self):
        with self.lock:
            self.rules = []
            self.rng = random.Random(0)

    def has_origin(self, origin):
        rules = self.rules
        return any(r.origin == origin for r in rules)

    def pick(self, origin, method, path):
        if not self.rules:
            return None
        with self.lock:
            for r in self.rules:
                if r.origin != origin:
                    continue
                if r.methods is not None and method not in r.methods:
                    continue
                if not r.regex.search(path):
                    continue
                r.matched += 1
                if r.every and r.matched % r.every != 0:
                    continue
                if r.probability is not None and self.rng.random() >= r.probability:
                    continue
                if r.count is not None and r.applied >= r.count:
                    continue
                r.applied += 1
                return r
        return None

    def to_json(self):
        with self.lock:
            return [r.to_json() for r in self.rules]


class RequestLog:
    """In-memory log of hub / python-CDN requests plus incremental parsing of nginx's JSON
    access log."""

    def __init__(self, nginx_log_path=None):
        self.lock = threading.Lock()
        self.records = []
        self.seq = 0
        self.nginx_log_path = nginx_log_path
        self.nginx_status_port = None
        self.nginx_pos = 0
        self.nginx_records = []
        self.inflight = 0
        self.idle = threading.Condition()

    def begin(self):
        with self.idle:
            self.inflight += 1

    def end(self):
        with self.idle:
            self.inflight -= 1
            if self.inflight <= 0:
                self.idle.notify_all()

    def add(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.records.append(rec)

    def _nginx_busy(self):
        """True while nginx is still writing a response (its log record comes after)."""
        if not self.nginx_status_port:
            return False
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.nginx_status_port, timeout=1)
            c.request("GET", "/_emu/nginx_status")
            text = c.getresponse().read().decode("ascii", "replace")
            c.close()
        except (OSError, http.client.HTTPException):
            return False
        m = re.search(r"Writing:\s*(\d+)", text)
        return bool(m) and int(m.group(1)) > 1  # the status request itself is writing

    def settle(self, timeout=0.3):
        """Wait (bounded) until no hub/python-CDN request is in flight and nginx has no response
        in progress, so that every completed request is in the log."""
        deadline = time.time() + timeout
        with self.idle:
            while self.inflight > 0:
                left = deadline - time.time()
                if left <= 0:
                    break
                self.idle.wait(left)
        while self._nginx_busy() and time.time() < deadline:
            time.sleep(0.005)

    def _pull_nginx(self):
        if not self.nginx_log_path:
            return
        try:
            with open(self.nginx_log_path, "rb") as f:
                f.seek(self.nginx_pos)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.nginx_pos += end + 1
        for line in data[:end].split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            self.nginx_records.append(parse_nginx_record(d))

    def snapshot(self, settle=0.3):
        if settle:
            self.settle(settle)
        with self.lock:
            self._pull_nginx()
            out = list(self.records) + list(self.nginx_records)
        out.sort(key=lambda r: r.get("t", 0))
        return out

    def clear(self, settle=0.3):
        if settle:
            self.settle(settle)
        with self.lock:
            self._pull_nginx()
            self.records = []
            self.nginx_records = []


def parse_nginx_record(d):
    uri = d.get("uri", "")
    path, _, query = uri.partition("?")
    try:
        msec = float(d.get("msec", 0))
        rt = float(d.get("request_time", 0))
    except (TypeError, ValueError):
        msec, rt = 0.0, 0.0
    return {
        "origin": "cdn",
        "via": "nginx",
        "method": d.get("method", ""),
        "path": path,
        "query": query,
        "range": d.get("range") or None,
        "status": int(d.get("status") or 0),
        "bytes": int(d.get("bytes") or 0),
        "auth": str(d.get("has_auth")) == "1",
        "ua": d.get("ua") or None,
        "accept": d.get("accept") or None,
        "accept_encoding": d.get("accept_encoding") or None,
        "t": round(msec - rt, 6),
        "dur": rt,
        "conn": d.get("conn"),
    }


def write_json_atomic(path, obj):
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
