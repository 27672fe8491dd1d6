#!/usr/bin/python3
"""The access patterns of tools/bench, one per subcommand; each prints one JSON line
{"bytes": N, "seconds": S, ...} timed with time.perf_counter around the work only (interpreter
start-up and imports are outside the timed region).

    loaders.py st-load FILE... [--header-from LOCAL...] [--deadline S]
        safetensors eager load: read 8 bytes, the JSON header, then every tensor in key
        (alphabetical) order with os.pread, wrapped as numpy arrays.
    loaders.py mmap-load FILE [--header-from LOCAL] [--deadline S]
        safe_open-style: read 8 bytes and the header, numpy.memmap the file, copy every tensor out
        in key order.
    loaders.py threads FILE [--threads 16] [--chunk-mib 2]
        N threads, each with its own fd, reading a contiguous 1/N of the file in CHUNK reads.
    loaders.py seq FILE [--deadline S] [--chunk-mib 1]
        one sequential stream of CHUNK reads (used for the time-capped peers; dd elsewhere).
    loaders.py small-files DIR [--expect repos-file-map.json] [--deadline S]
        `find DIR -type f`, then read every file it lists (checks SHA-256 against --expect).

The other loader patterns of docs/PERFORMANCE.md ("The rows"), one file each:

    loaders.py ranks FILE [--ranks 4] [--header-from LOCAL]
        tensor-parallel ranks: N processes started together, each reading 8 bytes and the header,
        then its share of every tensor in key order with pread: its rows (dim 0) of every tensor
        of two or more dimensions, the whole of the others (norms and biases, replicated).
    loaders.py shared-fd FILE [--workers 4] [--chunk-mib 1]
        forked workers sharing one descriptor (one FUSE handle): worker k preads chunks k, k+N,
        k+2N, ... so that the handle sees interleaved offsets.
    loaders.py odirect FILE [--threads 16] [--chunk-mib 2]
        fastsafetensors without GPUDirect: the threads pattern with O_DIRECT opens and page-aligned
        buffers.
    loaders.py prefetch-mmap FILE [--threads 8] [--chunk-mib 16] [--header-from LOCAL]
        vLLM's prefetch: N threads read the file in CHUNK pieces in file order (a shared counter)
        to warm the page cache, then the mmap load; timed together.

Each prints the bytes the pattern read in all (its processes and threads together) and the
seconds from the start of the first to the end of the last.

--header-from takes the safetensors header (tensor offsets) from a local copy of the same file:
the stub FUSE filesystem serves pattern bytes, and replaying the real file's exact reads on it
measures the FUSE path alone for the same access pattern. --deadline stops after S seconds
(the slow peers) and reports what was read; "complete" says whether the pattern finished.
"""

import argparse
import hashlib
import json
import mmap
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
          "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def tensor_plan(header):
    """[(name, dtype, shape, start, end)] in key order (relative to the data section)."""
    out = []
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        a, b = info["data_offsets"]
        out.append((name, info["dtype"], info["shape"], a, b))
    return out


def emit(**kw):
    print(json.dumps(kw), flush=True)


def st_load(files, header_from, deadline):
    headers = []
    for i, path in enumerate(files):
        src = header_from[i] if header_from else None
        headers.append(read_header(src) if src else None)
    total = 0
    tensors = 0
    complete = True
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        fd = os.open(path, os.O_RDONLY)
        try:
            raw = os.pread(fd, 8, 0)
            (n,) = struct.unpack("<Q", raw)
            if headers[i] is not None:
                n = headers[i][0]
            hbytes = os.pread(fd, n, 8)
            header = headers[i][1] if headers[i] is not None else json.loads(hbytes)
            total += 8 + len(hbytes)
            base = 8 + n
            for name, dtype, shape, a, b in tensor_plan(header):
                buf = os.pread(fd, b - a, base + a)
                if len(buf) != b - a:
                    raise SystemExit("short read of %s in %s: %d of %d" % (name, path, len(buf), b - a))
                np.frombuffer(buf, dtype=DTYPES.get(dtype, np.uint8)).reshape(shape)
                total += len(buf)
                tensors += 1
                if deadline and time.perf_counter() - t0 > deadline:
                    complete = False
                    break
        finally:
            os.close(fd)
        if not complete:
            break
    dt = time.perf_counter() - t0
    emit(bytes=total, seconds=dt, tensors=tensors, complete=complete)


def mmap_load(path, header_from, deadline):
    pre = read_header(header_from) if header_from else None
    t0 = time.perf_counter()
    total, tensors, complete = mmap_copy_out(path, pre, deadline, t0)
    dt = time.perf_counter() - t0
    emit(bytes=total, seconds=dt, tensors=tensors, complete=complete)


def mmap_copy_out(path, pre, deadline, t0):
    """safe_open's load: 8 bytes, the header (its offsets from `pre` if given), then every tensor
    copied out of a numpy.memmap in key order. (bytes, tensors, complete)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        (n,) = struct.unpack("<Q", raw)
        if pre is not None:
            n = pre[0]
        hbytes = f.read(n)
        header = pre[1] if pre is not None else json.loads(hbytes)
    base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    total = 8 + len(hbytes)
    tensors = 0
    complete = True
    for name, dtype, shape, a, b in tensor_plan(header):
        view = mm[base + a:base + b]
        t = np.array(view)  # copy out, as safe_open(...).get_tensor() does
        if t.nbytes != b - a:
            raise SystemExit("short tensor %s" % name)
        total += t.nbytes
        tensors += 1
        del t
        if deadline and time.perf_counter() - t0 > deadline:
            complete = False
            break
    del mm
    return total, tensors, complete


def threads_load(path, nthreads, chunk, direct=False):
    size = os.stat(path).st_size
    per = (size + nthreads - 1) // nthreads
    if direct:
        per = (per + 4095) // 4096 * 4096  # O_DIRECT offsets are block aligned
    counts = [0] * nthreads
    errors = []
    start = threading.Barrier(nthreads + 1)

    def worker(k):
        lo, hi = k * per, min(size, (k + 1) * per)
        buf = mmap.mmap(-1, chunk) if direct else bytearray(chunk)  # an anonymous map is page aligned
        mv = memoryview(buf)
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            start.wait()
            off = lo
            while off < hi:
                want = min(chunk, hi - off)
                if direct:
                    want = min(chunk, (hi - off + 4095) // 4096 * 4096)  # aligned; short at the end of file
                got = os.preadv(fd, [mv[:want]], off)
                if got <= 0:
                    errors.append("short read at %d" % off)
                    return
                got = min(got, hi - off)
                off += got
                counts[k] += got
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            os.close(fd)
            mv.release()
            if direct:
                buf.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise SystemExit("; ".join(errors[:3]))
    emit(bytes=sum(counts), seconds=dt, complete=True)


def together(n, work):
    """Runs work(k) in n forked processes released at once; each returns its byte count. Returns
    (bytes in all, seconds from the release to the last one's end). A failing child fails the run."""
    go_r, go_w = os.pipe()
    kids = []
    for k in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(r)
            code = 0
            try:
                os.read(go_r, 1)
                got = work(k)
                os.write(w, json.dumps({"bytes": got}).encode())
            except BaseException as e:  # noqa: BLE001 -- reported to the parent, never raised past fork
                os.write(w, json.dumps({"error": repr(e)}).encode())
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        kids.append((pid, r))
    os.close(go_r)
    time.sleep(0.2)  # every child waits on the pipe
    t0 = time.perf_counter()
    os.write(go_w, b"x" * n)
    results = []
    for pid, r in kids:
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        os.waitpid(pid, 0)
        results.append(json.loads(b"".join(chunks) or b'{"error": "no result"}'))
    dt = time.perf_counter() - t0
    os.close(go_w)
    errors = [x["error"] for x in results if "error" in x]
    if errors:
        raise SystemExit("; ".join(errors[:3]))
    return sum(x["bytes"] for x in results), dt


def rank_slices(header, base, rank, ranks):
    """[(offset, length)] of one tensor-parallel rank's reads, in key order: its rows of every
    tensor of two or more dimensions, the whole of the others."""
    out = []
    for name, dtype, shape, a, b in tensor_plan(header):
        if len(shape) >= 2 and shape[0] >= ranks:
            rows = shape[0]
            row = (b - a) // rows
            lo, hi = rank * rows // ranks, (rank + 1) * rows // ranks
            out.append((base + a + lo * row, (hi - lo) * row))
        else:
            out.append((base + a, b - a))
    return out


def ranks_load(path, ranks, header_from):
    pre = read_header(header_from) if header_from else None

    def rank(k):
        fd = os.open(path, os.O_RDONLY)
        try:
            (n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
            if pre is not None:
                n = pre[0]
            hbytes = os.pread(fd, n, 8)
            header = pre[1] if pre is not None else json.loads(hbytes)
            got = 8 + len(hbytes)
            for off, length in rank_slices(header, 8 + n, k, ranks):
                buf = os.pread(fd, length, off)
                if len(buf) != length:
                    raise RuntimeError("rank %d: short read at %d: %d of %d" % (k, off, len(buf), length))
                got += length
            return got
        finally:
            os.close(fd)

    total, dt = together(ranks, rank)
    emit(bytes=total, seconds=dt, complete=True)


def shared_fd_load(path, workers, chunk):
    size = os.stat(path).st_size
    fd = os.open(path, os.O_RDONLY)  # opened once, before the fork: one handle for every worker

    def worker(k):
        got = 0
        off = k * chunk
        while off < size:
            want = min(chunk, size - off)
            buf = os.pread(fd, want, off)
            if len(buf) != want:
                raise RuntimeError("worker %d: short read at %d: %d of %d" % (k, off, len(buf), want))
            got += want
            off += workers * chunk
        return got

    try:
        total, dt = together(workers, worker)
    finally:
        os.close(fd)
    emit(bytes=total, seconds=dt, complete=True)


def prefetch_mmap_load(path, nthreads, chunk, header_from):
    pre = read_header(header_from) if header_from else None
    size = os.stat(path).st_size
    nxt = [0]
    lock = threading.Lock()
    errors = []
    counts = [0] * nthreads

    def worker(k):
        fd = os.open(path, os.O_RDONLY)
        buf = bytearray(chunk)
        mv = memoryview(buf)
        try:
            while True:
                with lock:
                    off = nxt[0]
                    nxt[0] += chunk
                if off >= size:
                    return
                want = min(chunk, size - off)
                got = os.preadv(fd, [mv[:want]], off)
                if got != want:
                    errors.append("short read at %d: %d of %d" % (off, got, want))
                    return
                counts[k] += got
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            os.close(fd)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit("; ".join(errors[:3]))
    t_prefetch = time.perf_counter() - t0
    total, tensors, complete = mmap_copy_out(path, pre, 0, t0)
    dt = time.perf_counter() - t0
    emit(bytes=total, seconds=dt, prefetch_bytes=sum(counts), prefetch_seconds=t_prefetch, tensors=tensors,
         complete=complete)


def seq_load(path, chunk, deadline):
    buf = bytearray(chunk)
    total = 0
    complete = True
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
            if deadline and time.perf_counter() - t0 > deadline:
                complete = os.fstat(f.fileno()).st_size == total
                break
    emit(bytes=total, seconds=time.perf_counter() - t0, complete=complete)


def small_files(root, expect_path, deadline):
    expect = None
    if expect_path:
        with open(expect_path) as f:
            expect = json.load(f)  # relative path -> sha256
    t0 = time.perf_counter()
    out = subprocess.run(["find", root, "-type", "f"], check=True, capture_output=True).stdout
    t_find = time.perf_counter() - t0
    paths = sorted(p for p in out.decode().splitlines() if p)
    total = 0
    bad = []
    done = 0
    complete = True
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        total += len(data)
        if expect is not None:
            rel = os.path.relpath(p, root)
            if expect.get(rel) != hashlib.sha256(data).hexdigest():
                bad.append(rel)
        done += 1
        if deadline and time.perf_counter() - t0 > deadline:
            complete = done == len(paths)
            break
    dt = time.perf_counter() - t0
    missing = 0
    if expect is not None:
        listed = {os.path.relpath(p, root) for p in paths}
        missing = len(set(expect) - listed)
    emit(bytes=total, seconds=dt, find_seconds=t_find, files=len(paths), read=done, bad=len(bad),
         bad_examples=bad[:3], missing=missing, complete=complete)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    # subcommand: its arguments (name, add_argument keywords)
    file_ = ("file", {})
    header = ("--header-from", {})
    deadline = ("--deadline", {"type": float, "default": 0})

    def count(flag, n):
        return (flag, {"type": int, "default": n})

    def chunk(mib):
        return ("--chunk-mib", {"type": float, "default": mib})

    commands = {
        "st-load": [("files", {"nargs": "+"}), ("--header-from", {"nargs": "+"}), deadline],
        "mmap-load": [file_, header, deadline],
        "threads": [file_, count("--threads", 16), chunk(2)],
        "seq": [file_, chunk(1), deadline],
        "ranks": [file_, count("--ranks", 4), header],
        "shared-fd": [file_, count("--workers", 4), chunk(1)],
        "odirect": [file_, count("--threads", 16), chunk(2)],
        "prefetch-mmap": [file_, count("--threads", 8), chunk(16), header],
        "small-files": [("root", {}), ("--expect", {}), deadline],
    }
    for name, args in commands.items():
        s = sub.add_parser(name)
        for flag, kw in args:
            s.add_argument(flag, **kw)
    a = ap.parse_args()
    if a.cmd == "st-load":
        if a.header_from and len(a.header_from) != len(a.files):
            ap.error("--header-from needs one local file per FILE")
        st_load(a.files, a.header_from, a.deadline)
    elif a.cmd == "mmap-load":
        mmap_load(a.file, a.header_from, a.deadline)
    elif a.cmd == "threads":
        threads_load(a.file, a.threads, int(a.chunk_mib * 2**20))
    elif a.cmd == "seq":
        seq_load(a.file, int(a.chunk_mib * 2**20), a.deadline)
    elif a.cmd == "ranks":
        ranks_load(a.file, a.ranks, a.header_from)
    elif a.cmd == "shared-fd":
        shared_fd_load(a.file, a.workers, int(a.chunk_mib * 2**20))
    elif a.cmd == "odirect":
        threads_load(a.file, a.threads, int(a.chunk_mib * 2**20), direct=True)
    elif a.cmd == "prefetch-mmap":
        prefetch_mmap_load(a.file, a.threads, int(a.chunk_mib * 2**20), a.header_from)
    elif a.cmd == "small-files":
        small_files(a.root, a.expect, a.deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
