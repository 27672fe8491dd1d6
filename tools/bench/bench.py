#!/usr/bin/python3
"""hubfs benchmark: every row of the performance table in one run, each with its baseline measured
in the same run (see docs/PERFORMANCE.md). Run it through tools/bench/run, which installs what is
missing and builds first.

    /usr/bin/python3 tools/bench/bench.py [--quick] [--repeat N] [--out FILE.md] [--no-peers]

Everything talks to 127.0.0.1 only: the Hub emulator (tools/hubemu, LFS objects served by nginx
from a copy of the fixture on tmpfs, so that dropping the page cache makes the client cold, not
the origin) and, for the peers, a second nginx with `autoindex on` over the same objects. The
network-bound rows start a second emulator whose nginx caps each connection (--net-conn-mibps),
the way one TCP stream to a distant CDN is slow while parallel streams add up.
Needs root (drop_caches, FUSE mounts, read_ahead_kb).
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "hubemu"))
from hubemu import Emulator  # noqa: E402

PY = "/usr/bin/python3"
HUBFS = os.path.join(ROOT, "build", "tools", "hubfs")
STUB = os.path.join(ROOT, "build", "tools", "bench", "hubfs_stub_fuse")
LOADERS = os.path.join(ROOT, "tools", "bench", "loaders.py")
GEN = os.path.join(ROOT, "tools", "hubemu", "gen_fixture.py")
MODEL = "hubfs-bench/llama-2shard"
DATASET = "hubfs-bench/small-files"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
GB = 1e9
RSS_MANY_WHAT = "cold 2 shards x 64 threads"  # the mount of the many-handles RSS row
MIB = 2**20

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


PRETOUCH_MIB = 0  # --pretouch-mib


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    if PRETOUCH_MIB > 0:
        pretouch(PRETOUCH_MIB)


def pretouch(mib):
    """Writes `mib` MiB of fresh memory and frees it. On a VM whose balloon reports free memory to
    the host (virtio free page reporting), memory freed long ago is unbacked on the host, and the
    first touch of each page costs a host fault: a cold row that fills the page cache from such
    memory reads up to a third slower, whichever reader it is. Touching it here first makes every
    row (baselines and hubfs alike) start from memory the host backs, as on bare metal."""
    import ctypes
    n = mib * MIB
    buf = bytearray(n)
    ctypes.memset((ctypes.c_char * n).from_buffer(buf), 1, n)
    del buf


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def sha256_file(path, chunk=8 * MIB):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        mv = memoryview(buf)
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(mv[:k])
            n += k
    return h.hexdigest(), n


def vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def page_cache_folio_kib(path, limit=256 * MIB):
    """Average size (KiB) of the page-cache folios holding the first `limit` bytes of `path`, read
    from /proc/self/pagemap and /proc/kpageflags (root only; the pages must be cached already:
    mapping them reads nothing). None when that cannot be measured. The hot rows' limit: where the
    kernel keeps a FUSE file in 4 KiB folios and an ext4 file in ~250 KiB ones (6.18 here), a
    re-read through FUSE walks ~60x as many folios, and the first re-read also activates each."""
    import mmap
    import struct
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        pages = min(os.fstat(fd).st_size, limit) // 4096
        if pages == 0:
            return None
        m = mmap.mmap(fd, pages * 4096, prot=mmap.PROT_READ)
        try:
            for i in range(pages):
                m[i * 4096]  # map the cached page (the page cache has it: no read is issued)
            base = None
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[5].strip() == os.path.realpath(path):
                        base = int(parts[0].split("-")[0], 16)
                        break
            if base is None:
                return None
            folios = 0
            with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
                pm.seek(base // 4096 * 8)
                entries = struct.unpack("%dQ" % pages, pm.read(8 * pages))
                for e in entries:
                    pfn = e & ((1 << 55) - 1)
                    if not (e >> 63) & 1 or pfn == 0:
                        return None  # not present, or PFNs hidden (not root)
                    kf.seek(pfn * 8)
                    flags = struct.unpack("Q", kf.read(8))[0]
                    if not flags & (1 << 16):  # a head page or a small folio: one folio starts here
                        folios += 1
            return pages * 4.0 / folios
        finally:
            m.close()
    except (OSError, ValueError, struct.error):
        return None
    finally:
        os.close(fd)


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def system_cpu():
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


class CpuMeter:
    """CPU seconds of some PIDs and the machine's busy fraction over a block."""

    def __init__(self, pids):
        self.pids = {k: p for k, p in pids.items() if p}

    def __enter__(self):
        self.c0 = {k: proc_cpu_s(p) for k, p in self.pids.items()}
        self.s0 = system_cpu()
        return self

    def __exit__(self, *exc):
        self.cpu = {k: proc_cpu_s(p) - self.c0[k] for k, p in self.pids.items()}
        s1 = system_cpu()
        self.busy = (s1[0] - self.s0[0]) / max(1, s1[1] - self.s0[1])
        return False


class LoadSampler:
    """Samples, twice a second, how much of the machine's CPU went to processes that are not this
    benchmark's (this process and its descendants: daemons, readers, the emulator, nginx), nor
    kernel threads or interrupts. On a shared machine that is the noise in every figure; the table
    shows it per row ("other load")."""

    def __init__(self, interval=0.5):
        import threading
        self.interval = interval
        self.samples = []  # (t_end, foreign fraction of all CPUs over the interval)
        self.me = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _procs():
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    raw = f.read()
            except OSError:
                continue
            f = raw.rsplit(")", 1)[1].split()
            # state ppid ... utime(11) stime(12) cutime(13) cstime(14); flags(6) has PF_KTHREAD 0x200000
            out[int(d)] = (int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]),
                           bool(int(f[6]) & 0x200000))
        return out

    @staticmethod
    def _stat():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        total = sum(v[:8])
        busy = total - v[3] - v[4] - v[7]  # minus idle, iowait, steal
        return total, busy, v[5] + v[6]    # irq + softirq

    def _ours(self, procs, pid):
        seen = 0
        while pid > 1 and seen < 64:
            if pid == self.me:
                return True
            pid = procs.get(pid, (0,))[0]
            seen += 1
        return False

    def _loop(self):
        prev_procs, prev_stat, prev_t = self._procs(), self._stat(), time.monotonic()
        while not self._stop.wait(self.interval):
            procs, st, t = self._procs(), self._stat(), time.monotonic()
            total = st[0] - prev_stat[0]
            busy = st[1] - prev_stat[1]
            kernel = st[2] - prev_stat[2]
            ours = 0
            for pid, (ppid, cpu, kthread) in procs.items():
                d = cpu - prev_procs[pid][1] if pid in prev_procs else cpu
                if kthread or self._ours(procs, pid):
                    ours += max(0, d)
            foreign = max(0, busy - kernel - ours)
            self.samples.append((t, foreign / max(1, total), prev_t))
            prev_procs, prev_stat, prev_t = procs, st, t

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(2)

    def foreign(self, t0, t1):
        """Average foreign fraction over [t0, t1] (monotonic)."""
        num = den = 0.0
        for t_end, frac, t_beg in self.samples:
            overlap = min(t1, t_end) - max(t0, t_beg)
            if overlap > 0:
                num += frac * overlap
                den += overlap
        return num / den if den else None


def eight_readers(path, size):
    """8 `dd` processes reading the whole of `path` at once; the seconds until the last ends."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["dd", "if=" + path, "of=/dev/null", "bs=1M"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outs = [p.communicate(timeout=900)[1] for p in procs]
    dt = time.perf_counter() - t0
    for p, e in zip(procs, outs):
        mm = re.search(r"^(\d+) bytes", e, re.M)
        if p.returncode != 0 or not mm or int(mm.group(1)) != size:
            raise RuntimeError("one of 8 readers of %s failed: %s" % (path, e.strip()[-300:]))
    return dt


def run_dd(path, bs="1M", timeout=600):
    t0 = time.perf_counter()
    p = subprocess.run(["dd", "if=" + path, "of=/dev/null", "bs=" + bs], capture_output=True, text=True,
                       timeout=timeout)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError("dd %s failed: %s" % (path, p.stderr.strip()[-500:]))
    m = re.search(r"^(\d+) bytes", p.stderr, re.M)
    return int(m.group(1)) if m else -1, dt


def run_loader(args, timeout=900):
    p = subprocess.run([PY, LOADERS] + list(args), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("loaders.py %s failed (%d): %s" % (" ".join(args[:2]), p.returncode,
                                                              (p.stderr or p.stdout).strip()[-800:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# mounts


class Mount:
    """A FUSE daemon started in the foreground; always unmounted and stopped by PID."""

    name = "mount"

    def __init__(self, mp, cmd, logfile, ready_timeout=60):
        self.mp = mp
        self.cmd = cmd
        self.logfile = logfile
        self.ready_timeout = ready_timeout
        self.proc = None
        self.hwm_kib = None

    def __enter__(self):
        os.makedirs(self.mp, exist_ok=True)
        if os.path.ismount(self.mp):
            raise RuntimeError("%s is already a mount point" % self.mp)
        out = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            out.close()
        deadline = time.time() + self.ready_timeout
        try:
            while not os.path.ismount(self.mp):
                if self.proc.poll() is not None:
                    raise RuntimeError("%s exited with %s before mounting; log %s:\n%s" % (
                        self.cmd[0], self.proc.returncode, self.logfile, self.tail()))
                if time.time() > deadline:
                    raise RuntimeError("%s did not mount in %ds; log %s:\n%s" % (
                        self.cmd[0], self.ready_timeout, self.logfile, self.tail()))
                time.sleep(0.02)
        except BaseException:
            self.close()
            raise
        return self

    def tail(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def sample_hwm(self):
        if self.proc is not None and self.proc.poll() is None:
            v = vm_hwm_kib(self.proc.pid)
            if v is not None:
                self.hwm_kib = max(self.hwm_kib or 0, v)
        return self.hwm_kib

    def close(self):
        self.sample_hwm()
        if os.path.ismount(self.mp):
            for attempt in range(20):
                r = subprocess.run(["fusermount3", "-u", self.mp], capture_output=True)
                if r.returncode == 0 or not os.path.ismount(self.mp):
                    break
                time.sleep(0.25)
            else:
                subprocess.run(["fusermount3", "-uz", self.mp], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGTERM)
                    self.proc.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    try:
                        os.kill(self.proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    self.proc.wait(10)
        try:
            os.rmdir(self.mp)
        except OSError:
            pass

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args):
        self.a = args
        self.rows = []      # table rows
        self.notes = []     # lines printed under the table
        self.info = {}      # raw measurements (also written with --json)
        self.hubfs_hwm = []  # (what, KiB)
        self.mounts = []
        self.emu = None
        self.net_emus = []  # emulators with a capped CDN (stopped by cleanup too)
        self.peer_nginx = None
        self.work = None
        self.origin = None
        self.t_start = time.time()
        self.load = LoadSampler()
        self.windows = {}  # key -> [(t0, t1)] (monotonic) of the timed parts

    def win(self, key):
        bench = self

        class _W:
            def __enter__(self):
                self.t0 = time.monotonic()

            def __exit__(self, *exc):
                bench.windows.setdefault(key, []).append((self.t0, time.monotonic()))
                return False

        return _W()

    def other_load(self, *keys):
        """The largest average foreign load over the windows of these keys (None if unknown)."""
        worst = None
        for k in keys:
            vals = [self.load.foreign(a, b) for a, b in self.windows.get(k, [])]
            vals = [v for v in vals if v is not None]
            if vals:
                v = median(vals)
                worst = v if worst is None else max(worst, v)
        return worst

    # -- helpers -------------------------------------------------------------------------------
    def note(self, s):
        self.notes.append(s)
        log(s)

    def row(self, name, value, baseline, ratio, target, ok, keys=()):
        load = self.other_load(*keys)
        self.rows.append({"row": name, "value": value, "baseline": baseline, "ratio": ratio, "target": target,
                          "ok": ok, "other_load": load})

    def mp(self, name):
        path = os.path.join(self.work, "mnt-%s-%d" % (name, len(self.mounts)))
        self.mounts.append(path)
        return path

    def hubfs_mount(self, what, cache_dir=None, extra=(), emu=None):
        cache_dir = cache_dir or self.cache
        # huggingface_hub's cache holds the model only in the row that measures it (measure_hf_cache):
        # whatever this machine's ~/.cache/huggingface holds must not change the other rows, which
        # look in an empty one (the default's work: a lookup there at every open).
        hf = [] if "--hf-cache" in extra else ["--hf-cache", os.path.join(self.work, "hf-empty")]
        cmd = [HUBFS, "mount", self.mp("hubfs"), "--foreground", "--endpoint", (emu or self.emu).hub_url,
               "--cache-dir", cache_dir] + hf + list(self.a.hubfs_arg) + list(extra)
        m = Mount(cmd[2], cmd, os.path.join(self.work, "hubfs.log"))
        m.what = what
        return m

    def hubfs_done(self, m):
        if m.hwm_kib:
            self.hubfs_hwm.append((m.what, m.hwm_kib))

    def clear_hubfs_cache(self, cache_dir=None):
        subprocess.run([HUBFS, "cache", "clear", "--cache-dir", cache_dir or self.cache], check=True,
                       capture_output=True)

    def shard_path(self, mp, i=0):
        return os.path.join(mp, *MODEL.split("/"), SHARDS[i])

    def verify_sha(self, path, i, what):
        digest, n = sha256_file(path)
        want = self.files[SHARDS[i]]
        if n != want["size"] or digest != want["sha256"]:
            raise RuntimeError("%s: %s read %d bytes with sha256 %s, expected %d bytes %s" % (
                what, path, n, digest, want["size"], want["sha256"]))
        return True

    def cdn_bytes(self, sha=None, expect=None, emu=None):
        """Bytes the CDN (nginx) sent since the last clear_log, for one object or all."""
        def total(recs):
            return sum(r.get("bytes") or 0 for r in recs
                       if r.get("origin") == "cdn" and (sha is None or sha in r.get("path", "")))
        emu = emu or self.emu
        recs = emu.log()
        if expect:
            deadline = time.time() + 3
            while total(recs) < expect and time.time() < deadline:
                time.sleep(0.1)
                recs = emu.log()
        return total(recs), recs

    # -- setup ---------------------------------------------------------------------------------
    def fixture(self):
        mb = self.a.shard_mb
        fx = "/var/tmp/hubfs-bench-fixture-%d" % mb
        if not os.path.exists(os.path.join(fx, "repos.json")):
            log("generating the bench fixture (%d MB shards) into %s" % (mb, fx))
            tmp = fx + ".tmp-%d" % os.getpid()
            shutil.rmtree(tmp, ignore_errors=True)
            env = dict(os.environ, HUBEMU_BENCH_SHARD_MB=str(mb))
            subprocess.run([PY, GEN, tmp, "--preset", "bench"], check=True, env=env, stdout=subprocess.DEVNULL)
            shutil.rmtree(fx, ignore_errors=True)
            os.rename(tmp, fx)
        else:
            log("reusing the bench fixture %s" % fx)
        with open(os.path.join(fx, "repos.json")) as f:
            doc = json.load(f)
        self.fx = fx
        self.repos = {r["id"]: r for r in doc["repos"]}

        def head_files(rid):
            r = self.repos[rid]
            head = r["refs"]["branches"][r["default_branch"]]
            return next(c for c in r["commits"] if c["id"] == head)["files"]

        self.files = head_files(MODEL)
        self.ds_files = head_files(DATASET)
        self.local = [os.path.join(fx, "objects", self.files[s]["sha256"]) for s in SHARDS]
        self.size = [self.files[s]["size"] for s in SHARDS]
        self.info["shard_bytes"] = self.size

    def start_origin(self):
        # The emulator serves objects from FIXTURE/objects: give it a copy on tmpfs so that
        # drop_caches makes the client cold but leaves the origin as fast as a CDN edge.
        if self.a.origin_on_disk:
            self.origin = self.fx
        else:
            self.origin = tempfile.mkdtemp(prefix="hubfs-bench-origin-", dir="/dev/shm")
            log("copying the fixture to tmpfs %s" % self.origin)
            shutil.copy2(os.path.join(self.fx, "repos.json"), self.origin)
            shutil.copytree(os.path.join(self.fx, "objects"), os.path.join(self.origin, "objects"))
        self.emu = Emulator(self.origin)
        log("emulator: hub %s, cdn %s" % (self.emu.hub_url, self.emu.cdn_url))
        self.cdn = []
        for s in SHARDS:
            url = "%s/%s/resolve/main/%s" % (self.emu.hub_url, MODEL, s)
            req = urllib.request.Request(url, method="HEAD")

            class NoRedirect(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *a, **k):
                    return None

            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
            try:
                opener.open(req, timeout=10)
                raise RuntimeError("no redirect for %s" % url)
            except urllib.error.HTTPError as e:
                loc = e.headers.get("Location")
                if e.code not in (301, 302, 307) or not loc:
                    raise
            if not loc.startswith("http://127.0.0.1:"):
                raise RuntimeError("unexpected CDN location %s" % loc)
            self.cdn.append(loc)

    # -- ceilings and local baselines ------------------------------------------------------------
    def curl_rate(self, url, key):
        """One curl stream (following redirects) of shard 0 from `url` to /dev/null, page cache
        dropped first: the rate (bytes/s); the timed part is recorded under `key`."""
        drop_caches()
        with self.win(key):
            t0 = time.perf_counter()
            p = subprocess.run(["curl", "-sfL", "--noproxy", "*", "-o", "/dev/null", "-w", "%{size_download}", url],
                               capture_output=True, text=True, check=True)
            dt = time.perf_counter() - t0
        if int(float(p.stdout)) != self.size[0]:
            raise RuntimeError("curl (%s) got %s bytes" % (key, p.stdout))
        return self.size[0] / dt

    def measure_curl(self):
        # one untimed request first: the origin's first connection after start-up is not its steady state
        subprocess.run(["curl", "-sf", "--noproxy", "*", "-o", "/dev/null", self.cdn[0]], check=True)
        rates = [self.curl_rate(self.cdn[0], "curl") for _ in range(self.a.repeat)]
        self.curl = median(rates)
        self.info["curl_gbps"] = [r / GB for r in rates]
        log("curl one stream: %.2f GB/s" % (self.curl / GB))

    def aria2c_rates(self, url, conns, key):
        """aria2c -xN -sN downloading shard 0 from `url` into tmpfs, page cache dropped first, --repeat
        times: the rates (bytes/s); its timed parts are recorded under `key`."""
        rates = []
        for _ in range(self.a.repeat):
            d = tempfile.mkdtemp(prefix="hubfs-bench-aria2c-", dir="/dev/shm")
            try:
                drop_caches()
                with self.win(key):
                    t0 = time.perf_counter()
                    subprocess.run(["aria2c", "-x%d" % conns, "-s%d" % conns, "-q", "--file-allocation=none",
                                    "--allow-overwrite=true", "--check-certificate=false", "--no-conf", "--all-proxy=",
                                    "-d", d, "-o", "shard", url], check=True, capture_output=True)
                    dt = time.perf_counter() - t0
                n = os.path.getsize(os.path.join(d, "shard"))
                if n != self.size[0]:
                    raise RuntimeError("aria2c (%s) wrote %d bytes" % (key, n))
                rates.append(self.size[0] / dt)
            finally:
                shutil.rmtree(d, ignore_errors=True)
        return rates

    def measure_aria2c(self):
        if not shutil.which("aria2c"):
            self.aria2c = None
            self.note("aria2c is not installed: no aria2c baseline")
            return
        rates = self.aria2c_rates(self.cdn[0], 8, "aria2c")
        self.aria2c = median(rates)
        self.info["aria2c_gbps"] = [r / GB for r in rates]
        log("aria2c -x8 -s8 (to tmpfs): %.2f GB/s" % (self.aria2c / GB))

    def patterns(self, path, local_header=None):
        """The four single-shard access patterns: name -> callable returning (bytes, seconds)."""
        hf = ["--header-from", local_header] if local_header else []

        def seq():
            return run_dd(path)

        def st():
            r = run_loader(["st-load", path] + hf)
            return r["bytes"], r["seconds"]

        def mm():
            r = run_loader(["mmap-load", path] + hf)
            return r["bytes"], r["seconds"]

        def thr():
            r = run_loader(["threads", path, "--threads", "16", "--chunk-mib", "2"])
            return r["bytes"], r["seconds"]

        return {"seq": seq, "st": st, "mmap": mm, "threads": thr}

    def more_patterns(self, path, local_header=None):
        """The other loader patterns of the design notes (info rows, no target in the issue):
        name -> callable returning (bytes, seconds)."""
        hf = ["--header-from", local_header] if local_header else []

        def run(args):
            r = run_loader(args)
            return r["bytes"], r["seconds"]

        return {"ranks": lambda: run(["ranks", path, "--ranks", "4"] + hf),
                "shared": lambda: run(["shared-fd", path, "--workers", "4", "--chunk-mib", "1"]),
                "odirect": lambda: run(["odirect", path, "--threads", "16", "--chunk-mib", "2"]),
                "prefetch": lambda: run(["prefetch-mmap", path, "--threads", "8", "--chunk-mib", "16"] + hf)}

    def expected_bytes(self, pattern, i=0):
        if pattern in ("seq", "threads", "shared", "odirect"):
            return self.size[i]
        if pattern in self.more_bytes:
            return self.more_bytes[pattern]
        return self.st_bytes[i]

    def hubfs_direct(self):
        """Whether hubfs opens a cold shard with FOPEN_DIRECT_IO (--direct-min-mib, default 64 MiB):
        the stub's ceiling is measured the same way."""
        mib = 64
        args = list(self.a.hubfs_arg)
        for i, a in enumerate(args):
            if a.startswith("--direct-min-mib="):
                mib = int(a.split("=", 1)[1])
            elif a == "--direct-min-mib" and i + 1 < len(args):
                mib = int(args[i + 1])
        return mib > 0 and self.size[0] >= mib << 20

    def measure_stub(self):
        """The FUSE-path ceiling, opened as hubfs opens a cold shard (direct or through the page
        cache); the other way too, for reference, and the hot page-cache read."""
        self.stub = {}
        self.stub_cpu = {}
        self.stub_other = {}
        self.stub_eight = {}
        self.stub_hot = None
        self.stub_seen = {}  # mode asked for -> mode the stub's opens got
        self.stub_mode = "direct" if self.hubfs_direct() else "page cache"
        for mode in (self.stub_mode, self.other_mode()):
            primary = mode == self.stub_mode
            mp = self.mp("stub")
            cmd = [STUB, mp, str(self.size[0]), "shard.bin"] + (["--direct"] if mode == "direct" else [])
            with Mount(mp, cmd, os.path.join(self.work, "stub.log")) as m:
                path = os.path.join(mp, "shard.bin")
                for name, fn in self.patterns(path, self.local[0]).items():
                    rates = []
                    cpu = []
                    for _ in range(self.a.repeat):
                        drop_caches()
                        with CpuMeter({"stub": m.proc.pid}) as cm, self.win("stub " + name):
                            n, dt = fn()
                        cpu.append(cm)
                        if n != self.expected_bytes(name):
                            raise RuntimeError("stub %s read %d bytes, expected %d" % (name, n, self.expected_bytes(name)))
                        rates.append(n / dt)
                    self.info["stub_%s_%s_gbps" % (mode.replace(" ", "_"), name)] = [r / GB for r in rates]
                    log("stub FUSE (%s) %s: %.2f GB/s" % (mode, name, median(rates) / GB))
                    if not primary:
                        self.stub_other[name] = median(rates)
                        continue
                    self.stub[name] = median(rates)
                    self.stub_cpu[name] = (median([c.cpu.get("stub", 0) for c in cpu]) / (self.size[0] / GB),
                                           median([c.busy for c in cpu]))
                if primary and self.more:
                    for name, fn in self.more_patterns(path, self.local[0]).items():
                        rates = []
                        for _ in range(self.a.repeat):
                            drop_caches()
                            with self.win("stub " + name):
                                n, dt = fn()
                            if n != self.expected_bytes(name):
                                raise RuntimeError("stub %s read %d bytes, expected %d" % (
                                    name, n, self.expected_bytes(name)))
                            rates.append(n / dt)
                        self.stub[name] = median(rates)
                        self.info["stub_%s_%s_gbps" % (mode.replace(" ", "_"), name)] = [r / GB for r in rates]
                        log("stub FUSE (%s) %s: %.2f GB/s" % (mode, name, median(rates) / GB))
                # 8 processes reading the whole file at once: the FUSE part of the 8-process row.
                times = []
                for _ in range(self.a.repeat):
                    drop_caches()
                    with self.win("stub eight"):
                        times.append(eight_readers(path, self.size[0]))
                self.stub_eight[mode] = median(times)
                self.info["stub_%s_eight_s" % mode.replace(" ", "_")] = times
                log("stub FUSE (%s) 8 processes: %.2f s" % (mode, self.stub_eight[mode]))
                if mode == "page cache":
                    run_dd(path)
                    rates = []
                    for _ in range(self.a.repeat):
                        with self.win("stub hot"):
                            n, dt = run_dd(path)
                        rates.append(n / dt)
                    self.stub_hot = median(rates)
                    log("stub FUSE hot (page cache): %.2f GB/s" % (self.stub_hot / GB))
                m.sample_hwm()
                # What the kernel granted (the stub says on its first open), not what was asked for.
                said = re.findall(r"^hubfs_stub_fuse %s: files open (direct|through the page cache)$" % re.escape(mp),
                                  m.tail(), re.M)
                self.stub_seen[mode] = ("direct" if said[-1] == "direct" else "page cache") if said else "unknown"
                if self.stub_seen[mode] != mode:
                    log("stub FUSE asked to open %s opened %s" % (mode, self.stub_seen[mode]))

    def measure_local(self):
        """One measurement of the local copy: cold (page cache dropped), first re-read, and the 2nd
        and 3rd re-reads. Taken next to each hubfs warm/hot measurement (measure_warm_hot's pairs):
        this VM's disk reads anywhere from 1.0 to 2.0 GB/s minute to minute, so a baseline taken
        minutes apart from the hubfs read it is compared with says more about the disk than about
        hubfs."""
        drop_caches()
        with self.win("local cold"):
            n, dt = run_dd(self.local[0])
        cold = n / dt
        with self.win("local hot"):
            n, dt = run_dd(self.local[0])
        hot = n / dt
        steady = []
        for _ in range(2):  # steady state: the page cache's first re-read also ages its pages
            n, dt = run_dd(self.local[0])
            steady.append(n / dt)
        if not hasattr(self, "local_folio_kib"):
            self.local_folio_kib = page_cache_folio_kib(self.local[0])
        return cold, hot, steady

    # -- hubfs rows ----------------------------------------------------------------------------
    def cold_mount(self, what, emu=None):
        self.clear_hubfs_cache()
        m = self.hubfs_mount(what, emu=emu)
        m.__enter__()
        drop_caches()
        (emu or self.emu).clear_log()
        return m

    def other_mode(self):
        """The stub's reference open mode: the one hubfs does not use for a cold shard."""
        return "page cache" if self.stub_mode == "direct" else "direct"

    @staticmethod
    def mount_stats(m):
        """The mount's own counters (its stats file), or None if it cannot be read."""
        try:
            with open(os.path.join(m.mp, ".hubfs-stats")) as f:
                return dict(line.split()[:2] for line in f if line.strip() and not line.startswith("#"))
        except OSError:
            return None

    def hubfs_open_mode(self, m):
        """How the mount's opens so far went, from its own counters: direct if any was."""
        stats = self.mount_stats(m)
        if stats is None:
            return "unknown"
        return "direct" if float(stats.get("fuse.open.direct", 0)) > 0 else "page cache"

    def reread(self, path, key, what):
        """Page cache dropped and the origin's log cleared, `dd` of the whole shard: bytes per second."""
        drop_caches()
        self.emu.clear_log()
        with self.win(key):
            n, dt = run_dd(path)
        if n != self.size[0]:
            raise RuntimeError("%s read %d bytes" % (what, n))
        return n / dt

    def ceiling_mode(self):
        """The header's words for how the ceiling's file was opened, as granted, against hubfs's cold opens."""
        asked = getattr(self, "stub_mode", "page cache")
        stub = getattr(self, "stub_seen", {}).get(asked, asked)
        hub = sorted(getattr(self, "hub_open_seen", set()) or {asked})
        if stub == asked and hub == [asked]:
            return asked
        return "asked for %s: the stub's opens were %s, hubfs's cold opens %s; the ceiling is not measured the " \
               "way hubfs read" % (asked, stub, " and ".join(hub))

    def cold_once(self, name, fn, inside=None):
        """One cold mount (hubfs cache cleared, page cache dropped) and `fn(path)` of the first shard
        timed: its bytes checked, the origin's bytes counted, `inside(m, path)` run before the
        shard's SHA-256 is checked through the same mount. (rate, origin bytes, CpuMeter)."""
        sha0 = self.files[SHARDS[0]]["sha256"]
        m = self.cold_mount("cold " + name)
        try:
            path = self.shard_path(m.mp)
            with CpuMeter({"hubfs": m.proc.pid, "nginx": self.emu.nginx_pid}) as cm, self.win("hubfs " + name):
                n, dt = fn(path)
            if n != self.expected_bytes(name):
                raise RuntimeError("hubfs %s read %d bytes, expected %d" % (name, n, self.expected_bytes(name)))
            m.sample_hwm()
            b, _ = self.cdn_bytes(sha0, expect=self.size[0])
            if inside:
                inside(m, path)
            self.verify_sha(path, 0, "hubfs cold " + name)
            return n / dt, b, cm
        finally:
            m.close()
            self.hubfs_done(m)

    def measure_hubfs_cold(self):
        self.hub_open_seen = set()
        self.hub = {}
        self.hub_origin = {}
        self.hub_cpu = {}
        for name in ("seq", "st", "mmap", "threads"):
            rates, ob, cpu = [], [], []
            for _ in range(self.a.repeat):
                # the early re-read's baseline: taken before the mount, so that neither hubfs's
                # write-behind nor its verification of the file (disk work after a cold read) slows it
                early_local = self.local_cold_once() if name == "seq" else None

                def inside(m, path, name=name, early_local=early_local):
                    self.hub_open_seen.add(self.hubfs_open_mode(m))
                    if name == "seq":
                        self.measure_early_warm(m, path, early_local)

                rate, b, cm = self.cold_once(name, lambda path, name=name: self.patterns(path)[name](), inside)
                rates.append(rate)
                ob.append(b)
                cpu.append(cm)
            self.hub[name] = median(rates)
            self.hub_origin[name] = median(ob)
            self.hub_cpu[name] = (median([c.cpu.get("hubfs", 0) for c in cpu]) / (self.size[0] / GB),
                                  median([c.cpu.get("nginx", 0) for c in cpu]) / (self.size[0] / GB),
                                  median([c.busy for c in cpu]))
            self.info["hubfs_cold_%s_gbps" % name] = [r / GB for r in rates]
            log("hubfs cold %s: %.2f GB/s (origin %.3f x file)" % (name, self.hub[name] / GB,
                                                                  self.hub_origin[name] / self.size[0]))

    MORE_LABELS = {
        "ranks": "cold tensor-parallel load: 4 ranks (processes), each its rows of every tensor, pread",
        "shared": "cold forked workers sharing one fd: 4 workers, interleaved 1 MiB preads",
        "odirect": "cold O_DIRECT (fastsafetensors): 16 threads x own fd, 1/16 each, 2 MiB reads",
        "prefetch": "cold vLLM prefetch: 8 threads x 16 MiB in file order, then the mmap load",
    }

    def measure_more_loaders(self):
        """The design notes' other loader patterns, cold, each against the same pattern's ceiling."""
        self.more_hub, self.more_origin = {}, {}
        for name in self.MORE_LABELS:
            runs = [self.cold_once(name, lambda path, name=name: self.more_patterns(path)[name]())
                    for _ in range(self.a.repeat)]
            self.more_hub[name] = median([r for r, _, _ in runs])
            self.more_origin[name] = median([b for _, b, _ in runs])
            self.info["hubfs_cold_%s_gbps" % name] = [r / GB for r, _, _ in runs]
            log("hubfs cold %s: %.2f GB/s (origin %.3f x file)" % (name, self.more_hub[name] / GB,
                                                                  self.more_origin[name] / self.size[0]))

    def local_cold_once(self):
        """A cold read of the local copy (page cache dropped), the second of two: this VM's disk is
        cached by its host, so a file read or written seconds before reads back faster than one left
        alone for minutes (here 0.5-0.9 GB/s the first time, 1.2-2.0 after). hubfs's re-read comes
        seconds after it wrote its blocks; its baseline is read the same way, seconds after a read."""
        for _ in range(2):
            drop_caches()
            with self.win("local cold"):
                n, dt = run_dd(self.local[0])
        return n / dt

    def measure_early_warm(self, m, path, local_cold):
        """A re-read in the same mount right after its cold read, page cache dropped: before the
        cache has settled (no verified whole copy yet, so no passthrough), the daemon serves the
        blocks it kept on its disk tier, while its own write-behind and verification of the file may
        still be using the disk (as for a user who runs a load again at once). Its baseline is a cold
        read of the local copy taken just before the mount, which none of that slows. The origin must
        see no byte of the re-read."""
        mine = self.reread(path, "early warm", "hubfs re-read before the cache settled")
        b, _ = self.cdn_bytes(self.files[SHARDS[0]]["sha256"])
        if b != 0:
            raise RuntimeError("hubfs re-read before the cache settled fetched %d bytes from the origin" % b)
        stats = self.mount_stats(m) or {}
        pairs = getattr(self, "early_pairs", [])
        pairs.append((local_cold, mine, int(float(stats.get("fuse.open.passthrough", 0)))))
        self.early_pairs = pairs
        self.info["early_warm"] = [{"local_cold_gbps": a / GB, "hubfs_gbps": b / GB, "passthrough_opens": c}
                                   for a, b, c in pairs]
        log("re-read before the cache settled: hubfs %.2f GB/s, local copy cold (before the mount) %.2f GB/s" % (
            mine / GB, local_cold / GB))

    def measure_network_bound(self):
        """A distant CDN: a second emulator whose nginx caps every connection at --net-conn-mibps, as
        one TCP stream over a long round trip is capped while parallel streams add up. The rows
        that matter on a cloud VM: hubfs against one curl stream and against aria2c -x16 -s16."""
        rate = self.a.net_conn_mibps << 20
        emu = Emulator(self.origin, cdn_rate_limit=rate)
        self.net_emus.append(emu)
        try:
            url = "%s/%s/resolve/main/%s" % (emu.hub_url, MODEL, SHARDS[0])
            self.net_curl = self.curl_rate(url, "net curl")
            aria = self.aria2c_rates(url, 16, "net aria2c") if shutil.which("aria2c") else []
            self.net_aria2c = median(aria) if aria else None
            self.net_hub, hub = {}, {}
            for name in ("seq", "st"):
                rates = []
                for _ in range(self.a.repeat):
                    m = self.cold_mount("capped CDN " + name, emu=emu)
                    try:
                        path = self.shard_path(m.mp)
                        with self.win("net hubfs " + name):
                            n, dt = self.patterns(path)[name]()
                        if n != self.expected_bytes(name):
                            raise RuntimeError("hubfs (capped CDN) %s read %d bytes" % (name, n))
                        m.sample_hwm()
                        self.verify_sha(path, 0, "hubfs capped CDN " + name)
                        rates.append(n / dt)
                    finally:
                        m.close()
                        self.hubfs_done(m)
                self.net_hub[name] = median(rates)
                hub[name] = [r / GB for r in rates]
            self.info["net"] = {"conn_mibps": self.a.net_conn_mibps, "curl_gbps": self.net_curl / GB,
                                "aria2c_gbps": [r / GB for r in aria], "hubfs_gbps": hub}
            log("capped CDN (%d MiB/s per connection): curl %.2f GB/s, aria2c -x16 %s, hubfs seq %.2f, st %.2f GB/s" % (
                self.a.net_conn_mibps, self.net_curl / GB,
                "%.2f GB/s" % (self.net_aria2c / GB) if self.net_aria2c else "-",
                self.net_hub["seq"] / GB, self.net_hub["st"] / GB))
        finally:
            emu.stop()

    def measure_eight_network_bound(self):
        """The 8-process row where the network is the limit, as on a cloud VM reading a distant
        CDN: a third emulator whose nginx caps every connection at --net-eight-mibps, low enough
        that hubfs's parallel fetch runs well below this machine's cold ceiling. One reader, then 8
        processes at once, each cold; their times and the origin bytes (shard 0 only)."""
        rate = self.a.net_eight_mibps << 20
        emu = Emulator(self.origin, cdn_rate_limit=rate)
        self.net_emus.append(emu)
        sha0 = self.files[SHARDS[0]]["sha256"]
        one, eight, ratios = [], [], []
        try:
            for _ in range(self.a.repeat):
                for n in (1, 8):
                    m = self.cold_mount("capped CDN %d processes" % n, emu=emu)
                    try:
                        path = self.shard_path(m.mp)
                        with self.win("net eight %d" % n):
                            if n == 1:
                                got, dt = run_dd(path)
                                if got != self.size[0]:
                                    raise RuntimeError("hubfs (capped CDN) one reader read %d bytes" % got)
                            else:
                                dt = eight_readers(path, self.size[0])
                        m.sample_hwm()
                        b, _ = self.cdn_bytes(sha0, expect=self.size[0], emu=emu)
                        if n == 8:
                            self.verify_sha(path, 0, "hubfs capped CDN 8 processes")
                            ratios.append(b / self.size[0])
                        (one if n == 1 else eight).append(dt)
                    finally:
                        m.close()
                        self.hubfs_done(m)
        finally:
            emu.stop()
        self.net_one_t, self.net_eight_t, self.net_eight_bytes = median(one), median(eight), median(ratios)
        self.info["net_eight"] = {"conn_mibps": self.a.net_eight_mibps, "one_s": one, "eight_s": eight,
                                  "origin_ratio": ratios}
        log("capped CDN (%d MiB/s per connection): one reader %.2f s, 8 processes %.2f s, origin %.3f x file" % (
            self.a.net_eight_mibps, self.net_one_t, self.net_eight_t, self.net_eight_bytes))

    def measure_rss_many_readers(self):
        """The RSS bound "however many files and handles are open": one cold mount, both shards read
        at once by 64 threads each (128 handles, every one its own 1/64 of a shard, 2 MiB reads).
        Its peak RSS joins the RSS row; the bytes are checked."""
        m = self.cold_mount(RSS_MANY_WHAT)
        try:
            procs = [subprocess.Popen([PY, LOADERS, "threads", self.shard_path(m.mp, i), "--threads", "64"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
            outs = [p.communicate(timeout=900) for p in procs]
            for i, (p, (out, err)) in enumerate(zip(procs, outs)):
                if p.returncode != 0:
                    raise RuntimeError("64 threads on shard %d failed: %s" % (i, (err or out).strip()[-300:]))
                n = json.loads(out.strip().splitlines()[-1])["bytes"]
                if n != self.size[i]:
                    raise RuntimeError("64 threads on shard %d read %d bytes, expected %d" % (i, n, self.size[i]))
            m.sample_hwm()
            self.rss_many_kib = m.hwm_kib
            for i in range(2):
                self.verify_sha(self.shard_path(m.mp, i), i, "hubfs 2 shards x 64 threads")
        finally:
            m.close()
            self.hubfs_done(m)
        log("2 shards x 64 threads: hubfs peak RSS %s MiB" % (
            "%.0f" % (self.rss_many_kib / 1024) if self.rss_many_kib else "?"))

    def measure_time_to_model(self):
        both = self.size[0] + self.size[1]
        hub_t, base_t = [], []
        for _ in range(self.a.repeat):
            # baseline: curl both shards to local disk, then the same load from the local files
            d = tempfile.mkdtemp(prefix="hubfs-bench-dl-", dir="/var/tmp")
            try:
                drop_caches()
                with self.win("ttm base"):
                    t0 = time.perf_counter()
                    dests = []
                    for i, s in enumerate(SHARDS):
                        dest = os.path.join(d, s)
                        subprocess.run(["curl", "-sfL", "--noproxy", "*", "-o", dest,
                                        "%s/%s/resolve/main/%s" % (self.emu.hub_url, MODEL, s)], check=True)
                        dests.append(dest)
                    r = run_loader(["st-load"] + dests)
                    base_t.append(time.perf_counter() - t0)
                if r["bytes"] != self.st_bytes[0] + self.st_bytes[1]:
                    raise RuntimeError("local load read %d bytes" % r["bytes"])
            finally:
                shutil.rmtree(d, ignore_errors=True)
            m = self.cold_mount("cold load both shards")
            try:
                hub_t.append(self.load_both(m, "ttm hubfs", "hubfs load both shards"))
            finally:
                m.close()
                self.hubfs_done(m)
        self.ttm_hub, self.ttm_base = median(hub_t), median(base_t)
        self.info["ttm_hubfs_s"], self.info["ttm_curl_then_local_s"] = hub_t, base_t
        log("time to a loaded model: hubfs %.2f s, curl+local %.2f s (%.2f GB)" % (
            self.ttm_hub, self.ttm_base, both / GB))

    def load_both(self, m, key, what):
        """The safetensors load of both shards through mount m, timed (window `key`); then its byte
        count and both shards' SHA-256 checked. Returns the seconds it took."""
        paths = [self.shard_path(m.mp, i) for i in range(2)]
        with self.win(key):
            t0 = time.perf_counter()
            r = run_loader(["st-load"] + paths)
            dt = time.perf_counter() - t0
        if r["bytes"] != self.st_bytes[0] + self.st_bytes[1]:
            raise RuntimeError("%s read %d bytes" % (what, r["bytes"]))
        m.sample_hwm()
        for i in range(2):
            self.verify_sha(paths[i], i, what)
        return dt

    def measure_hf_cache(self):
        """Already downloaded: both shards sit in huggingface_hub's cache (blobs named by sha256,
        snapshot symlinks, as `hf download` leaves them; hard links to the local copies). The same
        load as the time-to-model row, with the page cache dropped: from huggingface_hub's snapshot
        paths directly (what transformers does with a downloaded model), then through a mount
        given --hf-cache, first with a fresh hubfs cache directory (each copy hashed at its first
        open) and then remounted on that directory (the verdicts kept: nothing hashed). The origin
        must send no file bytes."""
        r0 = self.repos[MODEL]
        commit = r0["refs"]["branches"][r0["default_branch"]]
        hub = os.path.join(self.work, "hf", "hub")
        repo = os.path.join(hub, "models--" + MODEL.replace("/", "--"))
        snaps = []
        for i, s in enumerate(SHARDS):
            blob = os.path.join(repo, "blobs", self.files[s]["sha256"])
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            if not os.path.exists(blob):
                try:
                    os.link(self.local[i], blob)
                except OSError:
                    shutil.copyfile(self.local[i], blob)
            snap = os.path.join(repo, "snapshots", commit, s)
            os.makedirs(os.path.dirname(snap), exist_ok=True)
            if not os.path.lexists(snap):
                os.symlink(os.path.relpath(blob, os.path.dirname(snap)), snap)
            snaps.append(snap)
        want = self.st_bytes[0] + self.st_bytes[1]
        base, first, again, warm_s, warmed, origin = [], [], [], [], [], 0
        # This VM's disk alternates between a fast and a slow pass for the same load (measured
        # 2026-11-24, 17:24: local loads of both shards, page cache dropped before each, took 1.36,
        # 3.36, 1.42, 3.32, 1.41 and 3.30 s). Every load below that can be repeated (all but a first
        # use, which hashes) is run twice in a row, page cache dropped before each, and the faster
        # one kept, the baseline's as hubfs's: one pass of each pair is the fast one.
        pairs = {"base": [], "again": [], "warmed": []}
        for _ in range(self.a.repeat):
            times = []
            for _ in range(2):
                drop_caches()
                with self.win("hf base"):
                    t0 = time.perf_counter()
                    r = run_loader(["st-load"] + snaps)
                    times.append(time.perf_counter() - t0)
                if r["bytes"] != want:
                    raise RuntimeError("load from huggingface_hub's cache read %d bytes" % r["bytes"])
            pairs["base"].append(times)
            base.append(min(times))
            cache, warmed_cache = os.path.join(self.work, "cache-hf"), os.path.join(self.work, "cache-hf-warm")
            for d in (cache, warmed_cache):
                shutil.rmtree(d, ignore_errors=True)
            # First use and a remount on one fresh hubfs cache directory; then `hubfs warm` ahead of a
            # mount on another: it hashes both copies (keeping the verdicts) and fetches nothing, and
            # the mount's load then hashes nothing.
            for what, out, cache_dir in (("first", first, cache), ("again", again, cache),
                                         ("warmed", warmed, warmed_cache)):
                self.emu.clear_log()
                if what == "warmed":
                    drop_caches()
                    with self.win("hf warm"):
                        t0 = time.perf_counter()
                        p = subprocess.run([HUBFS, "warm", MODEL, "--endpoint", self.emu.hub_url, "--cache-dir",
                                            cache_dir, "--hf-cache", hub, "*.safetensors"],
                                           capture_output=True, text=True, timeout=600)
                        warm_s.append(time.perf_counter() - t0)
                    if p.returncode != 0 or "2 of them in huggingface_hub's cache" not in p.stdout:
                        raise RuntimeError("hubfs warm with huggingface_hub's cache: %s" % (
                            p.stdout + p.stderr).strip()[-500:])
                m = self.hubfs_mount("hf cache " + what, cache_dir=cache_dir, extra=["--hf-cache", hub])
                m.__enter__()
                try:
                    times = []
                    for _ in range(1 if what == "first" else 2):
                        drop_caches()
                        times.append(self.load_both(m, "hf " + what, "hubfs load from huggingface_hub's cache (%s)" % what))
                    out.append(min(times))
                    if what in pairs:
                        pairs[what].append(times)
                    hashed = int((self.mount_stats(m) or {}).get("hf_cache.bytes_hashed", 0))
                    if what != "first" and hashed:
                        raise RuntimeError("the load (%s) hashed %d bytes again" % (what, hashed))
                finally:
                    m.close()
                    self.hubfs_done(m)
                b, _ = self.cdn_bytes()
                origin += b
        self.hf_base, self.hf_first, self.hf_again, self.hf_origin = median(base), median(first), median(again), origin
        self.hf_warm, self.hf_warmed = median(warm_s), median(warmed)
        self.info["hf_cache_local_s"], self.info["hf_cache_first_s"], self.info["hf_cache_again_s"] = base, first, again
        self.info["hf_cache_warm_s"], self.info["hf_cache_warmed_s"] = warm_s, warmed
        self.info["hf_cache_pairs_s"] = pairs
        log("already downloaded: local load %.2f s, hubfs first use %.2f s, remounted %.2f s, origin bytes %d" % (
            self.hf_base, self.hf_first, self.hf_again, origin))

    def measure_prewarm(self):
        """`hubfs warm` of the model (every file into a cleared cache, page cache dropped), against
        downloading both shards to the local disk (the cache's filesystem) with curl (one after the
        other) and with aria2c -x16 -s16 -j2, page cache dropped too, each synced to the disk: the
        download step hubfs makes unnecessary, done ahead by hubfs. The baseline is the faster."""
        want = sum(self.size)
        tools = {"curl": lambda d: [["curl", "-sf", "--noproxy", "*", "-o", os.path.join(d, "shard%d" % i), u]
                                    for i, u in enumerate(self.cdn)]}
        if shutil.which("aria2c"):
            tools["aria2c -x16 -s16 -j2"] = lambda d: [
                ["aria2c", "-x16", "-s16", "-j2", "-Z", "-q", "--file-allocation=none", "--allow-overwrite=true",
                 "--no-conf", "--all-proxy=", "-d", d] + list(self.cdn)]
        base = {k: [] for k in tools}
        mine, origin = [], []
        for _ in range(self.a.repeat):
            for name, cmds in tools.items():
                d = tempfile.mkdtemp(prefix="download-", dir=self.work)
                try:
                    drop_caches()
                    with self.win("prewarm " + name):
                        t0 = time.perf_counter()
                        for c in cmds(d):
                            subprocess.run(c, check=True, capture_output=True)
                        os.sync()  # on the disk, as the cache's blocks are once warm returns
                        base[name].append(time.perf_counter() - t0)
                    got = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
                    if got != want:
                        raise RuntimeError("%s wrote %d bytes of %d" % (name, got, want))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
            self.clear_hubfs_cache()
            drop_caches()
            self.emu.clear_log()
            with self.win("prewarm hubfs"):
                t0 = time.perf_counter()
                # (huggingface_hub's cache empty, as for the mounts: warm would verify its copies instead.)
                p = subprocess.run([HUBFS, "warm", MODEL, "--endpoint", self.emu.hub_url, "--cache-dir", self.cache,
                                    "--hf-cache", os.path.join(self.work, "hf-empty")],
                                   capture_output=True, text=True, timeout=600)
                os.sync()
                mine.append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise RuntimeError("hubfs warm failed: %s" % (p.stderr or p.stdout).strip()[-500:])
            b, _ = self.cdn_bytes(expect=want)
            origin.append(b / want)
        times = {k: median(v) for k, v in base.items()}
        best = min(times, key=times.get)
        self.prewarm = (median(mine), best, times, median(origin))
        self.info["prewarm_hubfs_s"] = mine
        self.info["prewarm_download_s"] = base
        log("hubfs warm of the model %.2f s; downloads: %s" % (
            self.prewarm[0], ", ".join("%s %.2f s" % kv for kv in times.items())))

    def measure_eight(self):
        times, ratios = [], []
        sha0 = self.files[SHARDS[0]]["sha256"]
        for _ in range(self.a.repeat):
            m = self.cold_mount("cold 8 processes")
            try:
                path = self.shard_path(m.mp)
                with self.win("eight"):
                    dt = eight_readers(path, self.size[0])
                m.sample_hwm()
                b, recs = self.cdn_bytes(sha0, expect=self.size[0])
                self.verify_sha(path, 0, "hubfs 8 processes")
                times.append(dt)
                ratios.append(b / self.size[0])
            finally:
                m.close()
                self.hubfs_done(m)
        self.eight_t, self.eight_bytes = median(times), median(ratios)
        self.info["eight_s"], self.info["eight_origin_ratio"] = times, ratios
        log("8 processes: %.2f s, origin %.3f x file" % (self.eight_t, self.eight_bytes))

    def settle_cache(self):
        """"hubfs cache kept" means a cache a daemon finished with: every block of shard 0 on disk,
        and (with passthrough, the default as root) the file verified and kept whole, as an earlier
        session that was not unmounted the moment its read ended leaves it. A short mount reads the
        shard (from the disk cache where the last cold row left it) and waits for that."""
        sha = self.files[SHARDS[0]]["sha256"]
        whole_dir = os.path.join(self.cache, "v2", "files")
        marker = os.path.join(self.cache, "v2", "verified", sha + "-1")
        with self.hubfs_mount("settle cache") as m:
            n, _ = run_dd(self.shard_path(m.mp))
            if n != self.size[0]:
                raise RuntimeError("settle read %d bytes" % n)
            t0 = time.time()
            while time.time() - t0 < 180:
                passthrough = "FUSE passthrough on" in m.tail()
                whole = os.path.isdir(whole_dir) and any(x.startswith(sha) for x in os.listdir(whole_dir))
                if whole or (not passthrough and os.path.exists(marker)):
                    break
                time.sleep(0.2)
            self.settle = {"passthrough": passthrough, "whole_file": whole, "seconds": round(time.time() - t0, 1)}
            self.info["settle"] = self.settle
            log("cache settled in %.1f s (passthrough %s, whole file %s)" % (time.time() - t0, passthrough, whole))

    def measure_warm_hot(self):
        """The warm and hot rows, as interleaved pairs: each pair is one measurement of the local copy
        (measure_local) and one hubfs mount (cache kept, page cache dropped, then re-read), taken one
        right after the other, in alternating order (local first, then hubfs first) so that neither
        side always runs second. This VM's disk and memory go through slow phases minute to minute; a
        pair's two sides share its phase, so each row's ratio is the median of the pairs' ratios. The
        medians of each side are printed beside it."""
        # the cache of the last cold row (8 readers of shard 1) is kept; fill it if it is not complete
        self.settle_cache()
        pairs = []
        for k in range(self.a.repeat * self.a.warm_pairs):
            if k % 2 == 0:
                local = self.measure_local()
                mine = self.measure_hubfs_warm(k)
            else:
                mine = self.measure_hubfs_warm(k)
                local = self.measure_local()
            pairs.append((local, mine))
        lcold = [p[0][0] for p in pairs]
        lhot = [p[0][1] for p in pairs]
        warm = [p[1][0] for p in pairs]
        hot = [p[1][1] for p in pairs]
        self.local_cold, self.local_hot = median(lcold), median(lhot)
        self.local_steady = median([r for p in pairs for r in p[0][2]])
        self.warm, self.hot = median(warm), median(hot)
        self.hot_steady = median([r for p in pairs for r in p[1][2]])
        self.warm_ratios = [w / c for w, c in zip(warm, lcold)]
        self.hot_ratios = [h / c for h, c in zip(hot, lhot)]
        self.steady_ratios = [median(p[1][2]) / median(p[0][2]) for p in pairs]
        self.info["local_cold_gbps"] = [r / GB for r in lcold]
        self.info["local_hot_gbps"] = [r / GB for r in lhot]
        self.info["hubfs_warm_gbps"], self.info["hubfs_hot_gbps"] = [r / GB for r in warm], [r / GB for r in hot]
        self.info["warm_pair_ratios"], self.info["hot_pair_ratios"] = self.warm_ratios, self.hot_ratios
        log("local copy: cold %.2f GB/s, page cache %.2f GB/s (medians of %d)" % (
            self.local_cold / GB, self.local_hot / GB, len(pairs)))
        log("hubfs warm %.2f GB/s (origin bytes during it: %d), hot %.2f GB/s" % (
            self.warm / GB, self.warm_origin, self.hot / GB))
        log("pair ratios: warm %s, hot %s" % (" ".join("%.2f" % r for r in self.warm_ratios),
                                               " ".join("%.2f" % r for r in self.hot_ratios)))

    def measure_hubfs_warm(self, k):
        """One hubfs warm/hot measurement: a fresh mount over the kept cache, page cache dropped, the
        warm read, the first re-read (hot) and the 2nd and 3rd re-reads; the bytes checked."""
        m = self.hubfs_mount("warm/hot")
        m.__enter__()
        try:
            path = self.shard_path(m.mp)
            warm = self.reread(path, "warm", "warm")
            b, _ = self.cdn_bytes()
            if k == 0:
                self.warm_origin = b
            with self.win("hot"):
                n, dt = run_dd(path)
            hot = n / dt
            steady = []
            for _ in range(2):
                n, dt = run_dd(path)
                steady.append(n / dt)
            if k == 0:
                self.hubfs_folio_kib = page_cache_folio_kib(path)
            self.verify_sha(path, 0, "hubfs warm")
            m.sample_hwm()
        finally:
            m.close()
            self.hubfs_done(m)
        return warm, hot, steady

    def expect_map(self):
        path = os.path.join(self.work, "small-files-expect.json")
        with open(path, "w") as f:
            json.dump({p: v["sha256"] for p, v in self.ds_files.items()}, f)
        return path

    def measure_small_files(self):
        times, counts = [], []
        expect = self.expect_map()
        for _ in range(self.a.repeat):
            m = self.cold_mount("2000 small files")
            try:
                root = os.path.join(m.mp, "datasets", *DATASET.split("/"))
                with self.win("small"):
                    r = run_loader(["small-files", root, "--expect", expect])
                if r["files"] != len(self.ds_files) or r["bad"] or r["missing"]:
                    raise RuntimeError("hubfs small files: %r" % r)
                m.sample_hwm()
                time.sleep(0.3)
                recs = self.emu.log()
                times.append(r["seconds"])
                counts.append(self.classify(recs))
                self.small_find_s = r["find_seconds"]
            finally:
                m.close()
                self.hubfs_done(m)
        self.small_t = median(times)
        self.small_req = counts[len(counts) // 2]
        self.info["small_files_s"], self.info["small_files_requests"] = times, counts
        log("2000 small files: %.2f s (find %.2f s), requests %s" % (self.small_t, self.small_find_s,
                                                                    json.dumps(self.small_req)))

    @staticmethod
    def classify(recs):
        c = {"tree_listing": 0, "resolve": 0, "resolve_cache": 0, "raw": 0, "cdn": 0, "other_api": 0, "other": 0}
        other = []
        for r in recs:
            p = r.get("path", "")
            if r.get("origin") == "cdn":
                c["cdn"] += 1
            elif re.match(r"^/api/(models|datasets|spaces)/.+/tree/", p):
                c["tree_listing"] += 1
            elif p.startswith("/api/resolve-cache/"):
                c["resolve_cache"] += 1
            elif "/resolve/" in p:
                c["resolve"] += 1
            elif "/raw/" in p:
                c["raw"] += 1
            elif p.startswith("/api/"):
                c["other_api"] += 1
                other.append(r.get("method", "") + " " + p)
            else:
                c["other"] += 1
                other.append(r.get("method", "") + " " + p)
        c["other_examples"] = sorted(set(other))[:6]
        return c

    # -- peers ---------------------------------------------------------------------------------
    def start_peer_nginx(self):
        www = os.path.join(self.work, "www")
        objects = os.path.join(self.origin, "objects")
        for rid, prefix in ((MODEL, MODEL), (DATASET, "datasets/" + DATASET)):
            r = self.repos[rid]
            head = r["refs"]["branches"][r["default_branch"]]
            files = next(c for c in r["commits"] if c["id"] == head)["files"]
            for p, v in files.items():
                dest = os.path.join(www, prefix, p)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.symlink(os.path.join(objects, v["sha256"]), dest)
        ndir = os.path.join(self.work, "peer-nginx")
        os.makedirs(os.path.join(ndir, "tmp"), exist_ok=True)
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = os.path.join(ndir, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""daemon off;
master_process off;
worker_processes 1;
pid %(n)s/nginx.pid;
error_log %(n)s/error.log warn;
%(user)s
events { worker_connections 1024; }
http {
    client_body_temp_path %(n)s/tmp/body;
    proxy_temp_path %(n)s/tmp/proxy;
    fastcgi_temp_path %(n)s/tmp/fastcgi;
    uwsgi_temp_path %(n)s/tmp/uwsgi;
    scgi_temp_path %(n)s/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    default_type application/octet-stream;
    types { }
    log_format peer '$request_method $status $body_bytes_sent "$http_range" $uri';
    server {
        listen 127.0.0.1:%(port)d;
        access_log %(n)s/access.log peer;
        root %(www)s;
        autoindex on;
        autoindex_exact_size on;
    }
}
""" % {"n": ndir, "user": user, "port": port, "www": www})
        out = open(os.path.join(ndir, "stderr.log"), "ab")
        self.peer_nginx = subprocess.Popen(["/usr/sbin/nginx", "-p", ndir + "/", "-c", conf, "-e",
                                            os.path.join(ndir, "error.log")], stdin=subprocess.DEVNULL,
                                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.peer_url = "http://127.0.0.1:%d/" % port
        self.peer_log = os.path.join(ndir, "access.log")
        deadline = time.time() + 10
        while True:
            try:
                _NO_PROXY.open(self.peer_url, timeout=1).read()
                break
            except Exception:
                if self.peer_nginx.poll() is not None or time.time() > deadline:
                    raise RuntimeError("peer nginx did not start")
                time.sleep(0.05)
        log("peer origin (nginx autoindex): %s" % self.peer_url)

    def peer_requests(self):
        try:
            with open(self.peer_log) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        return lines

    def peer_mount(self, peer, tag):
        mp = self.mp(peer)
        d = os.path.join(self.work, "peer-%s-%d" % (peer, len(self.mounts)))
        os.makedirs(d, exist_ok=True)
        logf = os.path.join(self.work, "%s.log" % peer)
        if peer.startswith("rclone"):
            mode = "full" if peer == "rclone-full" else "off"
            cmd = ["rclone", "mount", ":http:", mp, "--http-url", self.peer_url, "--read-only",
                   "--vfs-cache-mode", mode, "--cache-dir", d, "--config", os.path.join(d, "rclone.conf")]
        else:
            cmd = ["httpdirfs", "-f", "--no-range-check", "--cache", "--cache-location", d, self.peer_url, mp]
        return Mount(mp, cmd, logf)

    def measure_peers(self):
        self.peer = {}
        self.peer_notes = {}
        avail = {"rclone-off": shutil.which("rclone"), "rclone-full": shutil.which("rclone"),
                 "httpdirfs": shutil.which("httpdirfs")}
        cap = self.a.peer_cap_s
        expect = self.expect_map()
        peers = [p for p in self.a.peers.split(",") if p]
        for peer in peers:
            if not avail.get(peer):
                self.note("%s: not installed (apt-get install %s failed or was skipped): not measured" % (
                    peer, peer.split("-")[0]))
                continue
            res = {}
            for pattern in ("seq", "st", "small"):
                m = self.peer_mount(peer, pattern)
                try:
                    m.__enter__()
                    drop_caches()
                    n0 = len(self.peer_requests())
                    w = self.win("peer %s %s" % (peer, pattern))
                    w.__enter__()
                    if pattern == "small":
                        root = os.path.join(m.mp, "datasets", *DATASET.split("/"))
                        r = run_loader(["small-files", root, "--expect", expect, "--deadline", str(cap)],
                                       timeout=cap + 600)
                        if r["bad"]:
                            raise RuntimeError("%s served %d wrong small files" % (peer, r["bad"]))
                        files = len(self.ds_files)
                        t = r["seconds"] * (files / max(1, r["read"])) if not r["complete"] else r["seconds"]
                        res["small"] = {"seconds": t, "complete": r["complete"], "read": r["read"],
                                        "files_listed": r["files"], "measured_s": r["seconds"]}
                    else:
                        path = self.shard_path(m.mp)
                        if pattern == "seq":
                            r = run_loader(["seq", path, "--deadline", str(cap)], timeout=cap + 600)
                        else:
                            r = run_loader(["st-load", path, "--deadline", str(cap)], timeout=cap + 600)
                        if r["complete"] and r["bytes"] != self.expected_bytes(pattern):
                            raise RuntimeError("%s %s read %d bytes" % (peer, pattern, r["bytes"]))
                        res[pattern] = {"gbps": r["bytes"] / r["seconds"] / GB, "complete": r["complete"],
                                        "bytes": r["bytes"], "measured_s": r["seconds"]}
                    w.__exit__(None, None, None)
                    m.sample_hwm()
                    res[pattern]["requests"] = len(self.peer_requests()) - n0
                    log("%s %s: %s" % (peer, pattern, json.dumps(res[pattern])))
                except Exception as e:  # noqa: BLE001
                    res[pattern] = {"error": str(e)[-300:]}
                    log("%s %s failed: %s" % (peer, pattern, e))
                finally:
                    m.close()
            self.peer[peer] = res
        self.info["peers"] = self.peer

    # -- report --------------------------------------------------------------------------------
    def report(self):
        def gb(x):
            return "%.2f GB/s" % (x / GB)

        def ceiling(stub):
            return 1 / (1 / self.curl + 1 / stub)

        targets = {"seq": 0.9, "st": 0.85, "mmap": 0.7, "threads": 0.9}
        labels = {"seq": "cold sequential read of one shard (dd bs=1M)",
                  "st": "cold safetensors load (pread, key order)",
                  "mmap": "cold mmap load (numpy.memmap, key order)",
                  "threads": "cold 16 threads x own fd, 1/16 each, 2 MiB reads"}
        for k in ("seq", "st", "mmap", "threads"):
            if k not in self.hub:
                continue
            c = ceiling(self.stub[k])
            r = self.hub[k] / c
            self.row(labels[k], gb(self.hub[k]),
                     "ceiling %s (curl %.2f, stub %.2f; min %.2f)" % (gb(c), self.curl / GB, self.stub[k] / GB,
                                                                       min(self.curl, self.stub[k]) / GB),
                     "%.2f" % r, ">= %.2f" % targets[k], r >= targets[k], ("hubfs " + k, "curl", "stub " + k))
            if k == "seq":
                self.row("cold sequential, vs curl one stream", gb(self.hub[k]), "curl " + gb(self.curl),
                         "%.2f" % (self.hub[k] / self.curl), "-", None, ("hubfs seq", "curl"))
                if self.aria2c:
                    self.row("cold sequential, vs aria2c -x8 -s8", gb(self.hub[k]), "aria2c " + gb(self.aria2c),
                             "%.2f" % (self.hub[k] / self.aria2c), "-", None, ("hubfs seq", "aria2c"))
        for k, lab in self.MORE_LABELS.items():
            if k not in getattr(self, "more_hub", {}):
                continue
            c = ceiling(self.stub[k])
            self.row(lab, gb(self.more_hub[k]),
                     "ceiling %s (curl %.2f, stub %.2f); origin %.3f x file" % (
                         gb(c), self.curl / GB, self.stub[k] / GB, self.more_origin[k] / self.size[0]),
                     "%.2f" % (self.more_hub[k] / c), "-", None, ("hubfs " + k, "curl", "stub " + k))
        if getattr(self, "net_hub", None):
            cap = "CDN capped at %d MiB/s per connection" % self.a.net_conn_mibps
            labs = {"seq": "cold sequential", "st": "cold safetensors load"}
            for k in ("seq", "st"):
                if self.net_aria2c:
                    r = self.net_hub[k] / self.net_aria2c
                    self.row("%s, %s" % (labs[k], cap), gb(self.net_hub[k]),
                             "aria2c -x16 -s16 %s (curl one stream %s)" % (gb(self.net_aria2c), gb(self.net_curl)),
                             "%.2f" % r, ">= 1.00", r >= 1.0, ("net hubfs " + k, "net aria2c"))
                else:
                    self.row("%s, %s" % (labs[k], cap), gb(self.net_hub[k]), "curl one stream " + gb(self.net_curl),
                             "%.2f" % (self.net_hub[k] / self.net_curl), "-", None, ("net hubfs " + k, "net curl"))
        if hasattr(self, "ttm_hub"):
            r = self.ttm_hub / self.ttm_base
            self.row("time to a loaded model (cold load of both shards)", "%.2f s" % self.ttm_hub,
                     "curl both to disk + local load %.2f s" % self.ttm_base, "%.2f" % r, "<= 0.60", r <= 0.6,
                     ("ttm hubfs", "ttm base"))
        if hasattr(self, "hf_base"):
            for what, t, keys in (("first use, each copy hashed at its first open", self.hf_first, "hf first"),
                                  ("remounted, the hashes remembered", self.hf_again, "hf again"),
                                  ("after `hubfs warm` hashed the copies (warm %.2f s, nothing fetched)" % self.hf_warm,
                                   self.hf_warmed, "hf warmed")):
                r = self.hf_base / t
                self.row("already in huggingface_hub's cache, load both shards (page cache dropped): %s" % what,
                         "%.2f s" % t, "the same load from huggingface_hub's snapshot paths %.2f s (the faster of two "
                         "in a row, as hubfs's but a first use); origin bytes %d"
                         % (self.hf_base, self.hf_origin), "%.2f" % r, "-", None, (keys, "hf base"))
        if hasattr(self, "prewarm"):
            t, best, times, o = self.prewarm
            self.row("hubfs warm: the model fetched ahead into the cache (page cache dropped)", "%.2f s" % t,
                     "both shards downloaded to the local disk: %s; origin %.3f x the shards" % (
                         ", ".join("%s %.2f s" % kv for kv in times.items()), o),
                     "%.2f" % (times[best] / t), "-", None, ("prewarm hubfs", "prewarm " + best))
        if hasattr(self, "eight_t"):
            self.row("cold, 8 processes x whole shard: origin bytes", "%.3f x file" % self.eight_bytes,
                     "file size %.2f GB" % (self.size[0] / GB), "%.3f" % self.eight_bytes, "<= 1.05",
                     self.eight_bytes <= 1.05, ("eight",))
            one = self.size[0] / self.hub["seq"]
            r = self.eight_t / one
            self.row("cold, 8 processes x whole shard: aggregate time", "%.2f s" % self.eight_t,
                     "one reader %.2f s" % one, "%.2f" % r, "<= 1.10", r <= 1.1, ("eight", "hubfs seq"))
            if self.stub_eight:
                # The machine's floor for this row, as the ceilings are built: the file fetched once
                # at curl's rate, plus 8 processes reading it through the stub FUSE filesystem (its
                # faster way), on the same cores.
                mode = min(self.stub_eight, key=self.stub_eight.get)
                floor = self.size[0] / self.curl + self.stub_eight[mode]
                self.row("cold, 8 processes: vs the machine's floor", "%.2f s" % self.eight_t,
                         "floor %.2f s (curl %.2f s + stub 8 processes %.2f s, %s; 1.1 x one reader %.2f s)" % (
                             floor, self.size[0] / self.curl, self.stub_eight[mode], mode, 1.1 * one),
                         "%.2f" % (self.eight_t / floor), "-", None, ("eight", "stub eight"))
        if hasattr(self, "net_eight_t"):
            cap = "CDN capped at %d MiB/s per connection" % self.a.net_eight_mibps
            self.row("cold, 8 processes x whole shard, %s: origin bytes" % cap, "%.3f x file" % self.net_eight_bytes,
                     "file size %.2f GB" % (self.size[0] / GB), "%.3f" % self.net_eight_bytes, "<= 1.05",
                     self.net_eight_bytes <= 1.05, ("net eight 8",))
            r = self.net_eight_t / self.net_one_t
            self.row("cold, 8 processes x whole shard, %s: aggregate time" % cap, "%.2f s" % self.net_eight_t,
                     "one reader %.2f s (%s)" % (self.net_one_t, gb(self.size[0] / self.net_one_t)), "%.2f" % r,
                     "<= 1.10", r <= 1.1, ("net eight 8", "net eight 1"))
        if getattr(self, "early_pairs", None):
            ep = self.early_pairs
            r = median([b / a for a, b, _ in ep])
            pt = sum(c for _, _, c in ep)
            self.row("warm before the cache settles: same mount, re-read right after the cold read, page cache "
                     "dropped", gb(median([b for _, b, _ in ep])),
                     "local copy, cold page cache, read before each mount %s; median of %d pairs' ratios%s" % (
                         gb(median([a for a, _, _ in ep])), len(ep),
                         "" if pt == 0 else " (%d passthrough opens)" % pt),
                     "%.2f" % r, "-", None, ("early warm", "local cold"))
        if hasattr(self, "warm"):
            n = len(self.warm_ratios)
            r = median(self.warm_ratios)
            self.row("warm: hubfs cache kept, remount, page cache dropped", gb(self.warm),
                     "local copy, cold page cache %s; median of %d interleaved pairs' ratios" % (gb(self.local_cold), n),
                     "%.2f" % r, ">= 0.80", r >= 0.8, ("warm", "local cold"))
            r = median(self.hot_ratios)
            self.row("hot: page cache warm", gb(self.hot), "local copy, page cache %s (stub %s); median of %d pairs' "
                     "ratios" % (gb(self.local_hot), gb(self.stub_hot), n), "%.2f" % r, ">= 0.90", r >= 0.9,
                     ("hot", "local hot"))
            r = median(self.steady_ratios)
            self.row("hot, 2nd and 3rd re-read (steady page cache)", gb(self.hot_steady),
                     "local copy, 2nd and 3rd re-read %s; median of %d pairs' ratios" % (gb(self.local_steady), n),
                     "%.2f" % r, "-", None, ())
            fh, fl = getattr(self, "hubfs_folio_kib", None), getattr(self, "local_folio_kib", None)
            st = getattr(self, "settle", {})
            if st.get("whole_file"):
                self.note("warm and hot rows: opened in FUSE passthrough mode, the kernel reading the verified whole "
                          "copy the daemon kept in its cache directory (%.1f s after the settling read ended); "
                          "page-cache folios %s KiB on average, the local copy's %s KiB" % (
                              st["seconds"], "%.0f" % fh if fh else "?", "%.0f" % fl if fl else "?"))
            elif fh and fl:
                self.note("hot rows: the kernel holds hubfs's page cache in folios of %.0f KiB on average, the "
                          "local copy's in %.0f KiB ones (first 256 MiB, /proc/kpageflags): a re-read through FUSE walks "
                          "%.0fx as many folios, and the first re-read also activates each" % (fh, fl, fl / fh))
        if hasattr(self, "small_t"):
            n = len(self.ds_files)
            limit = 2 + n / 1000
            lst = self.small_req["tree_listing"]
            self.row("2000 small files: listing requests (tree pages)", "%d" % lst,
                     "raw %d, resolve %d, resolve-cache %d, cdn %d, other %d" % (
                         self.small_req["raw"], self.small_req["resolve"], self.small_req["resolve_cache"],
                         self.small_req["cdn"], self.small_req["other_api"] + self.small_req["other"]),
                     "-", "<= %d" % int(limit), lst <= limit, ("small",))
            best = self.best_peer("small", lower=True)
            if best:
                name, t, lab = best
                r = self.small_t / t
                self.row("2000 small files: find + read all", "%.2f s" % self.small_t,
                         "better peer %s %.2f s%s" % (name, t, lab), "%.2f" % r, "<= 0.50", r <= 0.5,
                         ("small", "peer %s small" % name))
            else:
                self.row("2000 small files: find + read all", "%.2f s" % self.small_t, "no peer measured", "-",
                         "<= 0.50 x peer", None)
        for k, lab in (("seq", "peers: cold sequential"), ("st", "peers: cold safetensors load")):
            if self.a.only and "peers" not in self.a.only.split(","):
                break  # not asked for (--only)
            best = self.best_peer(k) if self.peer else None
            if best and k in self.hub:
                name, v, tag = best
                r = self.hub[k] / (v * GB)
                self.row(lab, gb(self.hub[k]), "better peer %s %.2f GB/s%s" % (name, v, tag), "%.2f" % r,
                         ">= 2.00", r >= 2, ("hubfs " + k, "peer %s %s" % (name, k)))
            else:
                self.row(lab, gb(self.hub[k]) if k in self.hub else "-", "no peer measured", "-", ">= 2.00", None)
        if self.hubfs_hwm:
            what, kib = max(self.hubfs_hwm, key=lambda x: x[1])
            self.row("hubfs daemon peak RSS (VmHWM, default settings)", "%.0f MiB" % (kib / 1024),
                     "max over %d mounts (at: %s)" % (len(self.hubfs_hwm), what), "-", "<= 512 MiB",
                     kib / 1024 <= 512)
        if getattr(self, "rss_many_kib", None):
            mib = self.rss_many_kib / 1024
            self.row("hubfs daemon peak RSS, both shards x 64 threads at once (128 handles)", "%.0f MiB" % mib,
                     "the same mounts' largest other row: %s" % (
                         "%.0f MiB" % (max(k for w, k in self.hubfs_hwm if w != RSS_MANY_WHAT) / 1024)
                         if len(self.hubfs_hwm) > 1 else "-"), "-", "<= 512 MiB", mib <= 512)

    def best_peer(self, key, lower=False):
        best = None
        for name, res in self.peer.items():
            v = res.get(key, {})
            if "error" in v or not v:
                continue
            val = v["seconds"] if key == "small" else v["gbps"]
            tag = "" if v.get("complete", True) else " (extrapolated, capped at %gs)" % self.a.peer_cap_s
            if best is None or (val < best[1] if lower else val > best[1]):
                best = (name, val, tag)
        return best

    def render(self):
        hdr = ["row", "hubfs", "baseline (same run)", "ratio", "target", "result", "other load"]
        lines = []
        data = []
        for r in self.rows:
            res = "-" if r["ok"] is None else ("PASS" if r["ok"] else "MISS")
            ol = "-" if r.get("other_load") is None else "%.0f%%" % (100 * r["other_load"])
            data.append([r["row"], r["value"], r["baseline"], r["ratio"], r["target"], res, ol])
        w = [max(len(hdr[i]), *(len(d[i]) for d in data)) for i in range(len(hdr))] if data else [len(h) for h in hdr]
        fmt = "  ".join("%%-%ds" % x for x in w)
        lines.append(fmt % tuple(hdr))
        lines.append("  ".join("-" * x for x in w))
        for d in data:
            lines.append(fmt % tuple(d))
        md = ["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
        for d in data:
            md.append("| " + " | ".join(x.replace("|", "\\|") for x in d) + " |")
        return "\n".join(lines), "\n".join(md)

    def machine(self):
        cpu = ""
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        except OSError:
            pass
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip()
        return "%d cores (%s), %.0f GiB RAM, Linux %s; hubfs %s; idle before the run %.0f%%" % (
            os.cpu_count(), cpu, mem, platform.release(), rev or "?", getattr(self, "idle_before", 0) * 100)

    def peer_versions(self):
        out = []
        for cmd, want in ((["rclone", "version"], "rclone"), (["httpdirfs", "--version"], "HTTPDirFS")):
            if shutil.which(cmd[0]):
                p = subprocess.run(cmd, capture_output=True, text=True)
                lines = [x.strip() for x in (p.stdout + "\n" + p.stderr).splitlines() if want in x]
                out.append(lines[0] if lines else cmd[0])
        return out

    def peer_lines(self):
        out = []
        for name, res in self.peer.items():
            parts = []
            for k, lab in (("seq", "cold seq"), ("st", "safetensors load"), ("small", "small files")):
                v = res.get(k)
                if not v:
                    continue
                if "error" in v:
                    parts.append("%s: error (%s)" % (lab, v["error"][-120:].replace("\n", " ")))
                elif k == "small":
                    parts.append("%s: %.2f s%s, %d requests" % (
                        lab, v["seconds"], "" if v["complete"] else " (extrapolated from %d files in %.0f s)" % (
                            v["read"], v["measured_s"]), v["requests"]))
                else:
                    parts.append("%s: %.3f GB/s%s, %d requests" % (
                        lab, v["gbps"], "" if v["complete"] else " (extrapolated from %.0f MiB in %.0f s)" % (
                            v["bytes"] / MIB, v["measured_s"]), v["requests"]))
            out.append("%s: %s" % (name, "; ".join(parts)))
        return out

    # -- main ----------------------------------------------------------------------------------
    def run(self):
        global HUBFS, STUB
        if os.geteuid() != 0:
            raise SystemExit("bench.py needs root (drop_caches, read_ahead_kb)")
        for b in (HUBFS, STUB):
            if not os.access(b, os.X_OK):
                raise SystemExit("%s is missing: run tools/build release" % b)
        self.work = tempfile.mkdtemp(prefix="hubfs-bench-run-", dir="/var/tmp")
        os.mkdir(os.path.join(self.work, "hf-empty"))
        self.cache = os.path.join(self.work, "cache")
        # private copies of the binaries: a rebuild during the run must not change or break them
        HUBFS = shutil.copy2(HUBFS, os.path.join(self.work, "hubfs"))
        STUB = shutil.copy2(STUB, os.path.join(self.work, "hubfs_stub_fuse"))
        deadline = time.time() + self.a.wait_idle
        while True:
            b0 = system_cpu()
            time.sleep(2)
            b1 = system_cpu()
            self.idle_before = 1 - (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
            if self.idle_before >= 0.9 or time.time() > deadline:
                break
            log("waiting for the machine to be idle (%.0f%% idle now)" % (self.idle_before * 100))
        self.loadavg = os.getloadavg()
        if self.idle_before < 0.9:
            self.note("warning: the machine was only %.0f%% idle before the run (load %.2f): other work "
                      "shares the cores and lowers every figure" % (self.idle_before * 100, self.loadavg[0]))
        self.load.start()
        self.t_mono0 = time.monotonic()
        try:
            self.fixture()
            self.start_origin()
            self.st_bytes = []
            for p in self.local:
                r = run_loader(["st-load", p])
                self.st_bytes.append(r["bytes"])
            only = set(self.a.only.split(",")) if self.a.only else None

            def want(step):
                return only is None or step in only

            self.more = want("loaders")
            self.more_bytes = {}
            if self.more:  # what each of the other patterns reads of the local copy
                for k, fn in self.more_patterns(self.local[0]).items():
                    if k in ("ranks", "prefetch"):
                        self.more_bytes[k] = fn()[0]
            self.measure_curl()
            self.measure_aria2c()
            self.measure_stub()
            self.hub = {}
            if want("cold"):
                self.measure_hubfs_cold()
            if self.more:
                self.measure_more_loaders()
            if self.a.net_conn_mibps > 0 and want("net"):
                self.measure_network_bound()
            if want("ttm"):
                self.measure_time_to_model()
            if want("hf"):
                self.measure_hf_cache()
            if want("rss"):
                self.measure_rss_many_readers()
            if want("prewarm"):
                self.measure_prewarm()
            if want("eight"):
                if "seq" in self.hub:
                    self.measure_eight()
                else:
                    self.note("the 8-process rows compare with one reader's cold time: --only needs cold too")
            if self.a.net_eight_mibps > 0 and want("net-eight"):
                self.measure_eight_network_bound()
            if want("warm"):
                self.measure_warm_hot()
            if want("small"):
                self.measure_small_files()
            if self.a.peers and want("peers"):
                self.start_peer_nginx()
                self.measure_peers()
            else:
                self.peer = {}
            self.run_load = self.load.foreign(self.t_mono0, time.monotonic())
            self.report()
        finally:
            self.load.stop()
            self.cleanup()
        return self.output()

    def output(self):
        text, md = self.render()
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        head = ["hubfs bench, %s; %s" % (when, self.machine()),
                "data: %s, shards %s bytes (%s); %s (%d files); medians of %d run(s) (peers: 1 run, capped at %g s)" % (
                    MODEL, " + ".join(str(s) for s in self.size), "--quick" if self.a.quick else "full",
                    DATASET, len(self.ds_files), self.a.repeat, self.a.peer_cap_s),
                "hubfs mount options: defaults%s; cache dir on the local disk (/var/tmp); origin objects on tmpfs%s" % (
                    (" + " + " ".join(self.a.hubfs_arg)) if self.a.hubfs_arg else "",
                    "; %d MiB of memory written and freed after each page-cache drop (--pretouch-mib)" % PRETOUCH_MIB
                    if PRETOUCH_MIB else ""),
                "other load = the share of the machine's CPU taken by processes outside this benchmark during a "
                "row's timed parts (%.0f%% over the whole run); where it is high, every figure of that row is low" % (
                    100 * (getattr(self, "run_load", None) or 0)),
                "ceiling = 1/(1/curl + 1/stub) with curl one stream to /dev/null from the CDN origin and the stub "
                "FUSE filesystem replaying the same access pattern, its file opened as hubfs opens a cold shard "
                "(%s); GB = 1e9 bytes" % self.ceiling_mode()]
        extra = []
        if hasattr(self, "hub_origin"):
            extra.append("origin bytes per cold row (x file size): " + ", ".join(
                "%s %.3f" % (k, v / self.size[0]) for k, v in self.hub_origin.items()))
        if getattr(self, "hub_cpu", None):
            extra.append("CPU per GB read, cold rows (s/GB; machine busy fraction during the row): " + "; ".join(
                "%s hubfs %.2f, nginx %.2f, busy %.0f%%" % (k, h, n, b * 100) for k, (h, n, b) in self.hub_cpu.items()))
        if getattr(self, "stub_cpu", None):
            extra.append("CPU per GB read, stub FUSE (s/GB; busy fraction): " + "; ".join(
                "%s stub %.2f, busy %.0f%%" % (k, c, b * 100) for k, (c, b) in self.stub_cpu.items()))
        if getattr(self, "stub_other", None):
            other = self.other_mode()
            extra.append("stub FUSE opened the other way (%s), for reference: " % (
                other if self.stub_seen.get(other, other) == other else "asked for %s, got %s" % (
                    other, self.stub_seen[other])) + ", ".join(
                "%s %.2f GB/s" % (k, v / GB) for k, v in self.stub_other.items()))
        if hasattr(self, "warm_origin"):
            extra.append("origin bytes during the warm read: %d" % self.warm_origin)
        if hasattr(self, "small_req"):
            extra.append("2000 small files, hubfs requests: %s; find alone %.2f s" % (
                json.dumps({k: v for k, v in self.small_req.items() if k != "other_examples"}), self.small_find_s))
            if self.small_req.get("other_examples"):
                extra.append("  other requests, e.g.: %s" % "; ".join(self.small_req["other_examples"]))
        if self.peer:
            extra.append("peers: %s; httpdirfs runs with --cache (8 MiB segments, its fastest mode) and "
                         "--no-range-check; every peer mounts the same objects through nginx autoindex, which "
                         "hides dot files (2001 of the 2002 small files); small files reach hubfs from the emulator's "
                         "Python hub (hubfs: one GET /raw/ each; a /resolve/ would be a 307 to /api/resolve-cache/), the peers from nginx" % "; ".join(self.peer_versions()))
        extra.extend(self.peer_lines())
        if self.hubfs_hwm:
            per = {}
            for w, k in self.hubfs_hwm:
                per[w] = max(per.get(w, 0), k)
            extra.append("hubfs VmHWM, largest per row (MiB): " + ", ".join("%s %.0f" % (w, k / 1024)
                                                                              for w, k in per.items()))
        extra.extend(self.notes)
        print()
        print("\n".join(head))
        print()
        print(text)
        print()
        print("\n".join(extra))
        if self.a.out:
            with open(self.a.out, "w") as f:
                f.write("\n".join("- " + h for h in head) + "\n\n" + md + "\n\n" + "\n".join("- " + e for e in extra) + "\n")
        if self.a.json:
            with open(self.a.json, "w") as f:
                other = {k: [self.load.foreign(a, b) for a, b in w] for k, w in self.windows.items()}
                json.dump({"rows": self.rows, "info": self.info, "notes": self.notes, "other_load": other}, f,
                          indent=1)
        log("done in %.0f s" % (time.time() - self.t_start))
        return 0

    def cleanup(self):
        for mp in self.mounts:
            if os.path.ismount(mp):
                subprocess.run(["fusermount3", "-u", mp], capture_output=True)
                if os.path.ismount(mp):
                    subprocess.run(["fusermount3", "-uz", mp], capture_output=True)
        if self.peer_nginx is not None and self.peer_nginx.poll() is None:
            self.peer_nginx.terminate()
            try:
                self.peer_nginx.wait(10)
            except subprocess.TimeoutExpired:
                self.peer_nginx.kill()
        for e in self.net_emus:
            e.stop()
        if self.emu is not None:
            self.emu.stop()
        if self.origin and self.origin.startswith("/dev/shm/"):
            shutil.rmtree(self.origin, ignore_errors=True)
        if self.work and not self.a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        elif self.work:
            log("kept %s" % self.work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MB shards (HUBEMU_BENCH_SHARD_MB=256), shorter peer cap")
    ap.add_argument("--shard-mb", type=int, default=None, help="shard size in MB (default 1100; --quick 256)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the table shows medians (default 1)")
    ap.add_argument("--out", help="also write the table as markdown to this file")
    ap.add_argument("--json", help="write raw measurements as JSON to this file")
    ap.add_argument("--peers", default="rclone-off,rclone-full,httpdirfs",
                    help="comma list of rclone-off, rclone-full, httpdirfs ('' to skip)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--pretouch-mib", type=int, default=0,
                    help="after each page-cache drop, write and free this much memory first (VMs with free "
                         "page reporting: see pretouch()); default 0")
    ap.add_argument("--peer-cap-s", type=float, default=None, help="time cap per peer measurement (default 45; --quick 15)")
    ap.add_argument("--net-conn-mibps", type=int, default=64,
                    help="the network-bound rows: a second emulator whose CDN caps each connection at this many "
                         "MiB/s (a distant CDN); 0 skips them (default 64)")
    ap.add_argument("--net-eight-mibps", type=int, default=16,
                    help="the network-bound 8-process row: a CDN capping each connection at this many MiB/s, so "
                         "that the network, not the cores, is the limit; 0 skips it (default 16)")
    ap.add_argument("--warm-pairs", type=int, default=3,
                    help="interleaved pairs (local copy, hubfs) per --repeat for the warm and hot rows (default 3)")
    ap.add_argument("--origin-on-disk", action="store_true",
                    help="serve the origin from the fixture on disk instead of a tmpfs copy")
    ap.add_argument("--hubfs-arg", action="append", default=[],
                    help="extra argument for `hubfs mount` (repeatable), e.g. --hubfs-arg=--fetch-threads=16")
    ap.add_argument("--wait-idle", type=float, default=60,
                    help="wait up to this many seconds for the cores to be >= 90%% idle before starting (default 60)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) under /var/tmp")
    ap.add_argument("--only", default="",
                    help="comma list of the steps to run (the ceilings always run): cold, loaders, net, ttm, hf, "
                         "rss, prewarm, eight (needs cold), net-eight, warm, small, peers; default all")
    a = ap.parse_args()
    steps = {"cold", "loaders", "net", "ttm", "hf", "rss", "prewarm", "eight", "net-eight", "warm", "small", "peers"}
    unknown = set(a.only.split(",")) - steps if a.only else set()
    if unknown:
        ap.error("--only: no step %s (steps: %s)" % (", ".join(sorted(unknown)), ", ".join(sorted(steps))))
    if a.no_peers:
        a.peers = ""
    if a.shard_mb is None:
        a.shard_mb = 256 if a.quick else 1100
    if a.peer_cap_s is None:
        a.peer_cap_s = 15 if a.quick else 45
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if a.warm_pairs < 1:
        ap.error("--warm-pairs must be >= 1")
    global PRETOUCH_MIB
    PRETOUCH_MIB = max(0, a.pretouch_mib)
    return Bench(a).run()


if __name__ == "__main__":
    sys.exit(main())
