#!/usr/bin/python3
"""Local Hugging Face Hub emulator (read-only protocol) with an nginx CDN origin.

Command line:

    /usr/bin/python3 tools/hubemu/hubemu.py serve --fixture DIR --state DIR [--hub-port 0]
        [--cdn-port 0] [--page-size 1000] [--org-page-size 2] [--small-file-redirect 307|200]
        [--cdn-expiry-s 3600] [--lenient-refs] ...

Python (tests):

    sys.path.insert(0, "tools/hubemu")
    from hubemu import Emulator
    with Emulator(fixture_dir, cdn_expiry_s=1) as emu:
        emu.hub_url, emu.cdn_url, emu.log(), emu.set_faults([...]) ...

See README.md for the fixture format, the control API, fault rules and log records.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

__all__ = ["Emulator", "EmulatorError", "main"]


class EmulatorError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# server side


def build_arg_parser():
    ap = argparse.ArgumentParser(prog="hubemu.py", description="Local Hugging Face Hub emulator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the emulator (hub origin + nginx CDN + python CDN)")
    s.add_argument("--fixture", required=True, help="fixture directory written by gen_fixture.py")
    s.add_argument("--state", required=True, help="state directory (nginx config/logs, endpoints.json)")
    s.add_argument("--hub-port", type=int, default=0)
    s.add_argument("--cdn-port", type=int, default=0, help="nginx CDN port (0 = pick a free one)")
    s.add_argument("--cdn-py-port", type=int, default=0, help="python (faulty) CDN port (0 = free)")
    s.add_argument("--page-size", type=int, default=1000, help="tree page size (expand=false)")
    s.add_argument("--expand-page-size", type=int, default=50, help="tree page size with expand=true")
    s.add_argument("--org-page-size", type=int, default=2, help="page size of /api/{models,datasets,spaces}")
    s.add_argument("--small-file-redirect", type=int, choices=(307, 200), default=307,
                   help="307: regular files redirect to /api/resolve-cache/...; 200: served directly")
    s.add_argument("--cdn-expiry-s", type=int, default=3600, help="lifetime of signed CDN URLs")
    s.add_argument("--lenient-refs", action="store_true",
                   help="also accept an unencoded refs/pr/N or refs/convert/X revision")
    s.add_argument("--cdn-mode", choices=("auto", "nginx", "python"), default="auto",
                   help="auto: nginx unless a fault rule targets origin cdn; python: always the python CDN")
    s.add_argument("--cdn-reject-auth", action="store_true",
                   help="CDN answers 400 when a request carries Authorization (default: only logged)")
    s.add_argument("--cdn-rate-limit", type=int, default=0, metavar="BYTES_PER_S",
                   help="cap each nginx CDN connection at this many bytes/s (0 = none): a distant CDN, "
                        "where one stream is slow and parallel range requests add up")
    s.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process dies (used by the Emulator class)")
    return ap


def _say(text, stream=None):
    """print() that never kills the server when stdout/stderr is a closed pipe."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except (OSError, ValueError):
        pass


def serve(args):
    from emu_faults import FaultSet, RequestLog, write_json_atomic
    from emu_http import EmuContext, EmuHTTPServer, HubHandler, CdnHandler
    from emu_nginx import free_port, start_nginx, stop_nginx, write_config, can_connect
    from emu_store import Store

    parent = os.getppid()
    state = os.path.abspath(args.state)
    os.makedirs(state, exist_ok=True)
    endpoints_path = os.path.join(state, "endpoints.json")
    if os.path.exists(endpoints_path):
        os.unlink(endpoints_path)
    store = Store(args.fixture)
    ndir = os.path.join(state, "nginx")
    os.makedirs(ndir, exist_ok=True)
    access_log = os.path.join(ndir, "access.log")
    open(access_log, "wb").close()
    log = RequestLog(access_log)
    faults = FaultSet()
    ctx = EmuContext(store, args, log, faults)

    hub = EmuHTTPServer(("127.0.0.1", args.hub_port), HubHandler, ctx, "hub")
    cdn_py = EmuHTTPServer(("127.0.0.1", args.cdn_py_port), CdnHandler, ctx, "cdn")
    ctx.hub_url = "http://127.0.0.1:%d" % hub.server_address[1]
    ctx.cdn_py_url = "http://127.0.0.1:%d" % cdn_py.server_address[1]

    nginx = None
    last_err = None
    for _attempt in range(6):
        port = args.cdn_port or free_port()
        conf = write_config(ndir, port, store.objects_dir, ctx.secret, args.cdn_reject_auth, args.cdn_rate_limit)
        try:
            nginx = start_nginx(ndir, conf, port)
            ctx.cdn_url = "http://127.0.0.1:%d" % port
            log.nginx_status_port = port
            break
        except RuntimeError as e:
            last_err = e
            if args.cdn_port:
                break
    if nginx is None:
        hub.server_close()
        cdn_py.server_close()
        _say("hubemu: %s" % last_err, sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    threads = []
    for srv in (hub, cdn_py):
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        t.start()
        threads.append(t)
    rc = 0
    try:
        for srv in (hub, cdn_py):
            deadline = time.time() + 10
            while not can_connect(srv.server_address[1]):
                if time.time() > deadline:
                    raise RuntimeError("origin on port %d does not accept connections" % srv.server_address[1])
                time.sleep(0.02)
        if not can_connect(int(ctx.cdn_url.rsplit(":", 1)[1])):
            raise RuntimeError("nginx stopped accepting connections")
        endpoints = {"hub": ctx.hub_url, "cdn": ctx.cdn_url, "cdn_py": ctx.cdn_py_url, "pid": os.getpid(),
                     "nginx_pid": nginx.pid, "state": state, "fixture": store.dir}
        write_json_atomic(endpoints_path, endpoints)
        _say(json.dumps(endpoints))
        while not stop.wait(0.25):
            if nginx.poll() is not None:
                _say("hubemu: nginx exited unexpectedly (rc=%s); stopping" % nginx.returncode, sys.stderr)
                rc = 3
                break
            if args.exit_with_parent and os.getppid() != parent:
                break
    except Exception as e:
        _say("hubemu: %s" % e, sys.stderr)
        rc = 2
    finally:
        try:
            os.unlink(endpoints_path)
        except OSError:
            pass
        stop_nginx(nginx)
        # the serving threads are daemons: closing the listening sockets is enough
        for srv in (hub, cdn_py):
            try:
                srv.server_close()
            except Exception:
                pass
    return rc


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    if args.cmd == "serve":
        return serve(args)
    return 1


# ---------------------------------------------------------------------------------------------
# client side: the Emulator test helper

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LIVE = weakref.WeakSet()


def _stop_all():
    for emu in list(_LIVE):
        try:
            emu.stop()
        except Exception:
            pass


atexit.register(_stop_all)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _pid_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class Emulator:
    """Start the emulator as a subprocess on free 127.0.0.1 ports.

    Emulator(fixture_dir, *, state_dir=None, page_size=1000, expand_page_size=50, org_page_size=2,
             small_file_redirect=307, cdn_expiry_s=3600, lenient_refs=False, cdn_mode="auto",
             cdn_reject_auth=False, cdn_rate_limit=0, hub_port=0, cdn_port=0, startup_timeout=30.0,
             keep_state=False, python=sys.executable)

    Attributes: hub_url, cdn_url (nginx), cdn_py_url (python CDN), pid, nginx_pid, state_dir,
    fixture_dir. Use as a context manager or call stop() (idempotent, also run at exit).
    """

    def __init__(self, fixture_dir, *, state_dir=None, page_size=1000, expand_page_size=50, org_page_size=2,
                 small_file_redirect=307, cdn_expiry_s=3600, lenient_refs=False, cdn_mode="auto",
                 cdn_reject_auth=False, cdn_rate_limit=0, hub_port=0, cdn_port=0, startup_timeout=30.0,
                 keep_state=False, python=None):
        self.fixture_dir = os.path.abspath(fixture_dir)
        if not os.path.exists(os.path.join(self.fixture_dir, "repos.json")):
            raise EmulatorError("no repos.json in %s (run gen_fixture.py first)" % self.fixture_dir)
        self._own_state = state_dir is None
        self.keep_state = keep_state or os.environ.get("HUBEMU_KEEP_STATE") == "1"
        self.state_dir = os.path.abspath(state_dir) if state_dir else tempfile.mkdtemp(prefix="hubemu-state-")
        os.makedirs(self.state_dir, exist_ok=True)
        self.proc = None
        self.pid = None
        self.nginx_pid = None
        self.hub_url = self.cdn_url = self.cdn_py_url = None
        self._stopped = False
        cmd = [python or sys.executable, os.path.join(HERE, "hubemu.py"), "serve",
               "--fixture", self.fixture_dir, "--state", self.state_dir,
               "--hub-port", str(hub_port), "--cdn-port", str(cdn_port),
               "--page-size", str(page_size), "--expand-page-size", str(expand_page_size),
               "--org-page-size", str(org_page_size), "--small-file-redirect", str(small_file_redirect),
               "--cdn-expiry-s", str(cdn_expiry_s), "--cdn-mode", cdn_mode, "--exit-with-parent"]
        if lenient_refs:
            cmd.append("--lenient-refs")
        if cdn_reject_auth:
            cmd.append("--cdn-reject-auth")
        if cdn_rate_limit:
            cmd += ["--cdn-rate-limit", str(int(cdn_rate_limit))]
        self.server_log_path = os.path.join(self.state_dir, "server.log")
        out = open(self.server_log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True)
        finally:
            out.close()
        self.pid = self.proc.pid
        _LIVE.add(self)
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout):
        path = os.path.join(self.state_dir, "endpoints.json")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise EmulatorError("emulator exited with %s: %s" % (self.proc.returncode, self.server_output()))
            if os.path.exists(path):
                try:
                    with open(path) as f:
                        ep = json.load(f)
                except ValueError:
                    ep = None
                if ep and ep.get("pid") == self.pid:
                    self.hub_url, self.cdn_url, self.cdn_py_url = ep["hub"], ep["cdn"], ep["cdn_py"]
                    self.nginx_pid = ep["nginx_pid"]
                    self.endpoints = ep
                    return
            time.sleep(0.02)
        raise EmulatorError("emulator did not become ready in %.0fs: %s" % (timeout, self.server_output()))

    def server_output(self):
        try:
            with open(self.server_log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass

    # -- control API ------------------------------------------------------------------------
    def _control(self, method, path, payload=None, timeout=30):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.hub_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _NO_PROXY.open(req, timeout=timeout) as r:
                return json.loads(r.read().decode() or "null")
        except urllib.error.HTTPError as e:
            raise EmulatorError("%s %s -> %d: %s" % (method, path, e.code, e.read().decode(errors="replace")))

    def log(self, origin=None):
        """All request records (hub + cdn), ordered by start time."""
        recs = self._control("GET", "/_emu/log")
        if origin:
            recs = [r for r in recs if r.get("origin") == origin]
        return recs

    def wait_log(self, predicate, timeout=5.0, origin=None):
        """Poll log() until predicate(records) is true (nginx writes its record when a request
        completes); returns the records, raises EmulatorError on timeout."""
        deadline = time.time() + timeout
        while True:
            recs = self.log(origin)
            if predicate(recs):
                return recs
            if time.time() > deadline:
                raise EmulatorError("log condition not met within %.1fs; log=%r" % (timeout, recs[-20:]))
            time.sleep(0.02)

    def clear_log(self):
        self._control("POST", "/_emu/log/clear", {})

    def set_faults(self, rules, seed=0):
        """Replace all fault rules (see README.md for the fields)."""
        return self._control("POST", "/_emu/faults", {"rules": list(rules), "seed": seed})

    def faults(self):
        return self._control("GET", "/_emu/faults")

    def move_branch(self, repo_id, branch, commit, rtype="model"):
        """Simulates a push: `branch` of the repo now points at `commit` (an existing commit)."""
        return self._control("POST", "/_emu/refs", {"type": rtype, "id": repo_id, "branch": branch, "commit": commit})

    def clear_faults(self):
        self._control("DELETE", "/_emu/faults")

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except OSError:
                pass
        # nginx normally exits with the emulator (SIGTERM from it, or PDEATHSIG); make sure
        npid = self.nginx_pid
        if npid and _pid_alive(npid) and "nginx" in _pid_cmdline(npid) and self.state_dir in _pid_cmdline(npid):
            try:
                os.kill(npid, signal.SIGTERM)
                for _ in range(100):
                    if not _pid_alive(npid) or "nginx" not in _pid_cmdline(npid):
                        break
                    time.sleep(0.05)
                else:
                    os.kill(npid, signal.SIGKILL)
            except OSError:
                pass
        if self._own_state and not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        try:
            _LIVE.discard(self)
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
