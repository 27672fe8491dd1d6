"""Deterministic, streaming generator of real safetensors files.

``write_safetensors(path, tensors_spec, rng)`` writes a valid safetensors file:

    8-byte little-endian header length N | N bytes of JSON header (space padded to 8) | tensor bytes

The JSON header holds ``__metadata__`` and, per tensor, ``dtype``, ``shape`` and ``data_offsets``
(relative to the start of the byte buffer, in file order). Tensor values are realistic: weights
are drawn from N(0, std) (BF16/F16/F32), norms are close to 1.0, integer tensors count up.

The values are produced by a table lookup indexed by raw PCG64 output, so generation runs at
several hundred MB/s; hashing (sha256) and writing happen in a second thread.
"""

import hashlib
import json
import queue
import struct
import threading

import numpy as np

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

# elements generated per chunk (the writer thread hashes and writes one chunk while the next
# one is generated)
CHUNK_ELEMS = 4 << 20

_TABLES = {}
_TABLES_LOCK = threading.Lock()


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _table(dtype, init, std):
    """65536 pre-computed values for (dtype, init, std), independent of call order."""
    key = (dtype, init, round(float(std), 8))
    with _TABLES_LOCK:
        t = _TABLES.get(key)
        if t is not None:
            return t
        seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
        g = np.random.default_rng(seed)
        base = g.standard_normal(65536).astype(np.float32) * np.float32(std)
        if init == "ones":
            base = base + np.float32(1.0)
        if dtype == "F32":
            t = base
        elif dtype == "F16":
            t = base.astype(np.float16)
        elif dtype == "BF16":
            u = base.view(np.uint32)
            # round to nearest even when truncating to bfloat16
            t = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
        elif dtype == "F64":
            t = base.astype(np.float64)
        else:
            raise ValueError("no float table for dtype %s" % dtype)
        _TABLES[key] = t
        return t


def _gen_chunk(spec, start, count, rng):
    """Return a numpy array (or bytes) holding elements [start, start+count) of the tensor."""
    dtype = spec["dtype"]
    init = spec.get("init") or ("normal" if dtype in ("F32", "F16", "BF16", "F64") else "arange")
    if init == "zeros":
        return bytes(count * DTYPE_SIZES[dtype])
    if dtype in ("F32", "F16", "BF16", "F64") and init in ("normal", "ones"):
        table = _table(dtype, init, spec.get("std", 0.02 if init == "normal" else 0.05))
        raw = rng.bit_generator.random_raw((count + 3) // 4)
        idx = raw.view(np.uint16)[:count]
        return table[idx]
    if dtype in ("I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64") and init == "arange":
        npdt = {"I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
                "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}[dtype]
        mod = int(spec.get("modulo", 0)) or None
        a = np.arange(start, start + count, dtype=np.int64)
        if mod:
            a %= mod
        return a.astype(npdt)
    if dtype == "BOOL":
        raw = rng.bit_generator.random_raw((count + 7) // 8)
        return (raw.view(np.uint8)[:count] & 1).astype(np.uint8)
    # anything else: raw pseudo-random bytes
    nbytes = count * DTYPE_SIZES[dtype]
    raw = rng.bit_generator.random_raw((nbytes + 7) // 8)
    return raw.view(np.uint8)[:nbytes]


def build_header(tensors_spec, metadata=None):
    """Return (header_bytes_including_8_byte_length, total_file_size, header_dict)."""
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for spec in tensors_spec:
        dt = spec["dtype"]
        if dt not in DTYPE_SIZES:
            raise ValueError("unknown safetensors dtype %r" % dt)
        nbytes = _numel(spec["shape"]) * DTYPE_SIZES[dt]
        if spec["name"] in header:
            raise ValueError("duplicate tensor name %r" % spec["name"])
        header[spec["name"]] = {"dtype": dt, "shape": [int(d) for d in spec["shape"]],
                                "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pad = (8 - (8 + len(hjson)) % 8) % 8
    hjson += b" " * pad
    return struct.pack("<Q", len(hjson)) + hjson, 8 + len(hjson) + offset, header


def write_safetensors(path, tensors_spec, rng, metadata=None):
    """Write a safetensors file.

    tensors_spec: iterable of dicts {"name", "dtype", "shape", optional "init" ("normal",
        "ones", "zeros", "arange", "random"), "std", "modulo"}; tensors are stored in this order.
    rng: numpy.random.Generator (consumed deterministically).
    Returns {"size": int, "sha256": hex, "header": dict, "header_len": int}.
    """
    tensors_spec = [dict(s) for s in tensors_spec]
    head, total, header = build_header(tensors_spec, metadata)
    sha = hashlib.sha256()
    q = queue.Queue(maxsize=3)
    err = []

    def writer(f):
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                mv = memoryview(item).cast("B") if not isinstance(item, (bytes, bytearray)) else item
                sha.update(mv)
                f.write(mv)
        except BaseException as e:  # surfaced after join
            err.append(e)
            # drain so the producer never blocks forever
            while q.get() is not None:
                pass

    written = 0
    with open(path, "wb") as f:
        t = threading.Thread(target=writer, args=(f,), daemon=True)
        t.start()
        try:
            q.put(head)
            written += len(head)
            for spec in tensors_spec:
                n = _numel(spec["shape"])
                start = 0
                while start < n:
                    count = min(CHUNK_ELEMS, n - start)
                    chunk = _gen_chunk(spec, start, count, rng)
                    if isinstance(chunk, np.ndarray):
                        chunk = np.ascontiguousarray(chunk)
                        written += chunk.nbytes
                    else:
                        written += len(chunk)
                    q.put(chunk)
                    start += count
        finally:
            q.put(None)
            t.join()
    if err:
        raise err[0]
    if written != total:
        raise AssertionError("safetensors size mismatch %d != %d" % (written, total))
    return {"size": total, "sha256": sha.hexdigest(), "header": header, "header_len": len(head) - 8}


def read_safetensors_header(path):
    """Parse the header of a safetensors file (used by tests)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n).decode("utf-8"))


def param_counts(header):
    """{"parameters": {dtype: count}, "total": count} as in the Hub's model info."""
    counts = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        counts[info["dtype"]] = counts.get(info["dtype"], 0) + _numel(info["shape"])
    return {"parameters": counts, "total": sum(counts.values())}


# ----------------------------------------------------------------------------------------------
# Tensor layouts used by the presets


def llama_layer_specs(i, hidden, intermediate, kv_hidden, dtype="BF16", norm_dtype="F32"):
    p = "model.layers.%d." % i
    std = 0.02
    return [
        {"name": p + "input_layernorm.weight", "dtype": norm_dtype, "shape": [hidden], "init": "ones"},
        {"name": p + "mlp.down_proj.weight", "dtype": dtype, "shape": [hidden, intermediate], "std": std},
        {"name": p + "mlp.gate_proj.weight", "dtype": dtype, "shape": [intermediate, hidden], "std": std},
        {"name": p + "mlp.up_proj.weight", "dtype": dtype, "shape": [intermediate, hidden], "std": std},
        {"name": p + "post_attention_layernorm.weight", "dtype": norm_dtype, "shape": [hidden], "init": "ones"},
        {"name": p + "self_attn.k_proj.weight", "dtype": dtype, "shape": [kv_hidden, hidden], "std": std},
        {"name": p + "self_attn.o_proj.weight", "dtype": dtype, "shape": [hidden, hidden], "std": std},
        {"name": p + "self_attn.q_proj.weight", "dtype": dtype, "shape": [hidden, hidden], "std": std},
        {"name": p + "self_attn.v_proj.weight", "dtype": dtype, "shape": [kv_hidden, hidden], "std": std},
    ]


def spec_nbytes(spec):
    return _numel(spec["shape"]) * DTYPE_SIZES[spec["dtype"]]
