#!/usr/bin/python3
"""Generate a deterministic hub-emulator fixture.

    /usr/bin/python3 tools/hubemu/gen_fixture.py OUT_DIR --preset {test,demo,bench}

Writes OUT_DIR/repos.json (users, orgs, repos, refs, commits with full trees) and
OUT_DIR/objects/<sha256> (the content of every file, regular or LFS). See README.md for the
format. The same preset always produces the same bytes, hashes and commit ids.
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gitobj  # noqa: E402
from safetensors_gen import (  # noqa: E402
    llama_layer_specs,
    param_counts,
    spec_nbytes,
    write_safetensors,
)

FORMAT_VERSION = 1

USERS = [
    {"name": "alice", "fullname": "Alice Tester", "email": "alice@example.com", "token": "hf_alice",
     "orgs": ["hubfs-test", "hubfs-demo", "hubfs-bench"]},
    {"name": "bob", "fullname": "Bob Outsider", "email": "bob@example.com", "token": "hf_bob", "orgs": []},
]

GITATTRIBUTES = b"""*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""

WORDS = (
    "the of and to in is was for on that with as by at from his her an which were be are this "
    "model data token layer weight tensor attention head hidden state train eval loss learning rate "
    "batch sequence length vocabulary embedding norm dropout bias query key value projection output "
    "input gradient optimizer schedule warmup checkpoint shard index config file repository commit "
    "branch revision dataset split test validation example sentence label score metric accuracy "
    "river mountain forest ocean city village bridge road garden window door light shadow silver "
    "golden quiet rapid gentle ancient modern small large green blue red yellow north south east west"
).split()


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def mongo_id(text):
    return hashlib.sha1(("hubemu:" + text).encode()).hexdigest()[:24]


def words_text(rng, n_words, line_words=12):
    """Deterministic pseudo-English text (str) from a numpy Generator."""
    idx = rng.integers(0, len(WORDS), n_words)
    out = []
    for i in range(0, n_words, line_words):
        out.append(" ".join(WORDS[j] for j in idx[i:i + line_words]))
    return "\n".join(out) + "\n"


def make_tokenizer_json(rng, target_bytes, special=("<unk>", "<s>", "</s>")):
    """A structurally realistic BPE tokenizer.json of roughly target_bytes bytes."""
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    vocab = {}
    for i, tok in enumerate(special):
        vocab[tok] = i
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    merges = []
    # estimate: each vocab entry ~ 16 bytes, each merge ~ 16 bytes (indent 2 / 4)
    n = max(64, target_bytes // 40)
    lens = rng.integers(2, 9, n)
    letters = rng.integers(0, 26, int(lens.sum()))
    pos = 0
    for i in range(n):
        L = int(lens[i])
        tok = "".join(alphabet[c] for c in letters[pos:pos + L])
        pos += L
        if i % 3 == 0:
            tok = "\u0120" + tok  # GPT-2 style space marker
        if tok in vocab:
            continue
        vocab[tok] = len(vocab)
        cut = 1 + (i % (len(tok) - 1)) if len(tok) > 1 else 1
        merges.append(tok[:cut] + " " + tok[cut:])
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for t in special
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), len(vocab)


def readme(title, meta, body):
    lines = ["---"]
    for k, v in meta.items():
        if isinstance(v, list):
            lines.append("%s:" % k)
            lines.extend("- %s" % x for x in v)
        else:
            lines.append("%s: %s" % (k, v))
    lines.append("---")
    lines.append("")
    lines.append("# " + title)
    lines.append("")
    lines.append(body.rstrip("\n"))
    return ("\n".join(lines) + "\n").encode("utf-8")


def jdump(obj):
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


class Fixture:
    def __init__(self, out_dir, preset):
        self.out = out_dir
        self.preset = preset
        self.objects = os.path.join(out_dir, "objects")
        self.tmp = os.path.join(out_dir, ".tmp")
        os.makedirs(self.objects, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self.repos = []
        self.orgs = []
        self.small_cache = {}  # sha256 -> bytes for non-LFS content (to compute git oids)

    # -- objects ---------------------------------------------------------------------------
    def put_bytes(self, data):
        sha = hashlib.sha256(data).hexdigest()
        dest = os.path.join(self.objects, sha)
        if not os.path.exists(dest):
            tmp = os.path.join(self.tmp, sha)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, dest)
        if len(data) < gitobj.LFS_MIN_SIZE:
            self.small_cache[sha] = data
        return {"sha256": sha, "size": len(data)}

    def put_safetensors(self, tensors, rng, metadata=None):
        fd, tmp = tempfile.mkstemp(dir=self.tmp, suffix=".safetensors")
        os.close(fd)
        info = write_safetensors(tmp, tensors, rng, metadata)
        dest = os.path.join(self.objects, info["sha256"])
        if os.path.exists(dest):
            os.unlink(tmp)
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        return {"sha256": info["sha256"], "size": info["size"], "header": info["header"]}

    def entry(self, path, obj):
        size, sha = obj["size"], obj["sha256"]
        e = {"size": size, "sha256": sha}
        if gitobj.is_lfs(path, size):
            ptr = gitobj.lfs_pointer(sha, size)
            e["oid"] = gitobj.blob_oid(ptr)
            e["lfs"] = True
            e["pointer_size"] = len(ptr)
        else:
            data = self.small_cache.get(sha)
            if data is None:
                with open(os.path.join(self.objects, sha), "rb") as f:
                    data = f.read()
            e["oid"] = gitobj.blob_oid(data)
            e["lfs"] = False
        return e

    def repo(self, rtype, rid, **kw):
        r = RepoBuilder(self, rtype, rid, **kw)
        self.repos.append(r)
        return r

    def write(self):
        doc = {
            "format": "hubemu-fixture",
            "version": FORMAT_VERSION,
            "preset": self.preset,
            "lfs_rule": {"min_size": gitobj.LFS_MIN_SIZE, "suffixes": list(gitobj.LFS_SUFFIXES)},
            "users": USERS,
            "orgs": self.orgs,
            "repos": [r.to_json() for r in self.repos],
        }
        tmp = os.path.join(self.out, "repos.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, os.path.join(self.out, "repos.json"))
        shutil.rmtree(self.tmp, ignore_errors=True)


class RepoBuilder:
    def __init__(self, fx, rtype, rid, private=False, gated=False, disabled=False, aliases=(),
                 readers=(), gated_approved=(), created_ts=1700000000, meta=None, default_branch="main"):
        self.fx = fx
        self.type = rtype
        self.id = rid
        self.private = private
        self.gated = gated
        self.disabled = disabled
        self.aliases = list(aliases)
        self.readers = list(readers)
        self.gated_approved = list(gated_approved)
        self.created_ts = created_ts
        self.clock = created_ts
        self.meta = dict(meta or {})
        self.default_branch = default_branch
        self.commits = []  # oldest first
        self.by_id = {}
        self.branches = {}
        self.tags = {}
        self.prs = {}
        self.converts = {}

    def commit(self, changes, title, message="", parent="main", branch="main", author="alice"):
        """changes: {path: bytes | obj-dict from put_* | None (delete)}; parent: branch name,
        commit id or None (root commit). Returns the new commit id."""
        if parent is None:
            parent_id = None
        elif parent in self.branches:
            parent_id = self.branches[parent]
        elif parent in self.by_id:
            parent_id = parent
        else:
            parent_id = None
        files = dict(self.by_id[parent_id]["files"]) if parent_id else {}
        for path, val in changes.items():
            if val is None:
                files.pop(path, None)
                continue
            obj = self.fx.put_bytes(val) if isinstance(val, (bytes, bytearray)) else val
            files[path] = self.fx.entry(path, obj)
        files = dict(sorted(files.items()))
        self.clock += 86400 + 3600 * (len(self.commits) % 5)
        trees = gitobj.tree_oids({p: e["oid"] for p, e in files.items()})
        msg = title + ("\n\n" + message if message else "")
        user = next(u for u in USERS if u["name"] == author)
        cid = gitobj.commit_oid(trees[""], [parent_id] if parent_id else [], user["fullname"], user["email"],
                                self.clock, msg)
        c = {"id": cid, "parents": [parent_id] if parent_id else [], "title": title, "message": message,
             "date": iso(self.clock), "authors": [author], "tree": trees[""], "files": files}
        self.commits.append(c)
        self.by_id[cid] = c
        if branch:
            self.branches[branch] = cid
        return cid

    def to_json(self):
        d = {
            "type": self.type,
            "id": self.id,
            "_id": mongo_id(self.type + "/" + self.id),
            "aliases": self.aliases,
            "private": self.private,
            "gated": self.gated,
            "disabled": self.disabled,
            "readers": self.readers,
            "gated_approved": self.gated_approved,
            "createdAt": iso(self.created_ts),
            "default_branch": self.default_branch,
            "refs": {"branches": self.branches, "tags": self.tags, "pull_requests": self.prs,
                     "converts": self.converts},
            "meta": self.meta,
            "commits": self.commits,
        }
        return d


# ----------------------------------------------------------------------------------------------
# presets


def small_transformer_specs():
    """~20 MB, 30 tensors, mixed F32/F16/BF16/I64 (a tiny Llama-like model)."""
    hidden, inter, vocab = 512, 1376, 4096
    specs = [
        {"name": "model.embed_tokens.weight", "dtype": "F16", "shape": [vocab, hidden], "std": 0.02},
    ]
    for i in range(2):
        p = "model.layers.%d." % i
        specs += [
            {"name": p + "input_layernorm.weight", "dtype": "F32", "shape": [hidden], "init": "ones"},
            {"name": p + "self_attn.q_proj.weight", "dtype": "BF16", "shape": [hidden, hidden]},
            {"name": p + "self_attn.q_proj.bias", "dtype": "F32", "shape": [hidden]},
            {"name": p + "self_attn.k_proj.weight", "dtype": "BF16", "shape": [hidden, hidden]},
            {"name": p + "self_attn.k_proj.bias", "dtype": "F32", "shape": [hidden]},
            {"name": p + "self_attn.v_proj.weight", "dtype": "BF16", "shape": [hidden, hidden]},
            {"name": p + "self_attn.v_proj.bias", "dtype": "F32", "shape": [hidden]},
            {"name": p + "self_attn.o_proj.weight", "dtype": "BF16", "shape": [hidden, hidden]},
            {"name": p + "post_attention_layernorm.weight", "dtype": "F32", "shape": [hidden], "init": "ones"},
            {"name": p + "mlp.gate_proj.weight", "dtype": "BF16", "shape": [inter, hidden]},
            {"name": p + "mlp.up_proj.weight", "dtype": "BF16", "shape": [inter, hidden]},
            {"name": p + "mlp.down_proj.weight", "dtype": "BF16", "shape": [hidden, inter]},
            {"name": p + "self_attn.rotary_emb.inv_freq", "dtype": "F32", "shape": [hidden // 16]},
        ]
    specs += [
        {"name": "model.norm.weight", "dtype": "F32", "shape": [hidden], "init": "ones"},
        {"name": "model.position_ids", "dtype": "I64", "shape": [1, 2048], "init": "arange"},
        {"name": "lm_head.weight", "dtype": "F16", "shape": [vocab, hidden], "std": 0.02},
        {"name": "model.token_type_ids", "dtype": "I64", "shape": [2, 64], "init": "arange", "modulo": 2},
    ]
    return specs


def preset_test(fx):
    fx.orgs += [{"name": "hubfs-test", "fullname": "hubfs test org"},
                {"name": "openai-community", "fullname": "OpenAI community"}]
    rng = np.random.default_rng(20240101)

    # --- hubfs-test/tiny-model: history, tag, dev branch, PR ref -------------------------
    tiny = fx.repo("model", "hubfs-test/tiny-model", aliases=["hubfs-test/tiny-model-old"],
                   created_ts=1704103200,
                   meta={"downloads": 1234, "likes": 7, "library_name": "transformers",
                         "pipeline_tag": "text-generation",
                         "tags": ["transformers", "safetensors", "llama", "text-generation", "license:apache-2.0"],
                         "cardData": {"license": "apache-2.0", "language": ["en"]}})
    cfg_v1 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512,
              "intermediate_size": 1376, "num_hidden_layers": 2, "num_attention_heads": 8,
              "vocab_size": 4096, "torch_dtype": "bfloat16", "_revision": "v1"}
    cfg_v2 = dict(cfg_v1, _revision="v2", rope_theta=10000.0, max_position_embeddings=2048)
    tiny.commit({
        ".gitattributes": GITATTRIBUTES,
        "README.md": readme("tiny-model", {"license": "apache-2.0", "library_name": "transformers"},
                            "First version of the tiny test model.\n"),
        "config.json": jdump(cfg_v1),
        "old-notes.txt": b"These notes are removed in the third commit.\n",
    }, "Initial commit")
    st = fx.put_safetensors(small_transformer_specs(), rng, {"format": "pt"})
    tok, _ = make_tokenizer_json(rng, 300 * 1024)
    onnx = rng.bit_generator.random_raw(100 * 1024 // 8).tobytes()  # 100 KiB "onnx" blob
    c2 = tiny.commit({
        "model.safetensors": st,
        "tokenizer.json": tok,
        "tokenizer_config.json": jdump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                        "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer"}),
        "onnx/model.onnx": onnx,
        "a/b/c/deep.txt": b"deep file at a/b/c\n",
        "a/b/sibling.txt": b"sibling in a/b\n",
        "empty.txt": b"",
        "docs/hello w\u00f6rld \u00fc.txt": "Gr\u00fc\u00dfe, w\u00f6rld!\n".encode("utf-8"),
        "file@1.txt": b"a file with an at sign in its name\n",
        "small.bin": b"\x00\x01\x02tiny binary file stored in LFS because of its suffix\n",
        "text-64k-minus-1.txt": words_text(rng, 20000).encode()[:65535].ljust(65535, b"."),
        "text-64k.txt": words_text(rng, 20000).encode()[:65536].ljust(65536, b"."),
    }, "Add model weights and tokenizer", "Adds model.safetensors, tokenizer and assorted test files.")
    tiny.tags["v1.0"] = c2
    c3 = tiny.commit({
        "config.json": jdump(cfg_v2),
        "README.md": readme("tiny-model", {"license": "apache-2.0", "library_name": "transformers",
                                           "pipeline_tag": "text-generation"},
                            "Second version of the tiny test model card.\n"),
        "old-notes.txt": None,
    }, "Update config and model card")
    tiny.commit({"dev-only.txt": b"only on the dev branch\n",
                 "config.json": jdump(dict(cfg_v2, _revision="dev"))},
                "Dev: experimental config", parent=c3, branch="dev", author="bob")
    tiny.prs["1"] = tiny.commit({"README.md": readme("tiny-model", {"license": "apache-2.0"},
                                                     "Model card proposed in PR #1.\n"),
                                 "pr-notes.txt": b"added by pull request 1\n"},
                                "Update README.md (PR #1)", parent=c3, branch=None, author="bob")
    tiny.meta["safetensors"] = param_counts(st["header"])

    # --- openai-community/gpt2 with legacy alias gpt2 --------------------------------------
    g = fx.repo("model", "openai-community/gpt2", aliases=["gpt2"], created_ts=1552000000,
                meta={"downloads": 9000000, "likes": 2500, "library_name": "transformers",
                      "pipeline_tag": "text-generation",
                      "tags": ["transformers", "pytorch", "safetensors", "gpt2", "text-generation", "en",
                               "license:mit"],
                      "cardData": {"language": "en", "license": "mit"}})
    n_embd, n_layer, n_vocab, n_pos = 64, 2, 1000, 128
    gspecs = [{"name": "wte.weight", "dtype": "F32", "shape": [n_vocab, n_embd]},
              {"name": "wpe.weight", "dtype": "F32", "shape": [n_pos, n_embd]}]
    for i in range(n_layer):
        p = "h.%d." % i
        gspecs += [
            {"name": p + "ln_1.weight", "dtype": "F32", "shape": [n_embd], "init": "ones"},
            {"name": p + "ln_1.bias", "dtype": "F32", "shape": [n_embd], "init": "zeros"},
            {"name": p + "attn.c_attn.weight", "dtype": "F32", "shape": [n_embd, 3 * n_embd]},
            {"name": p + "attn.c_attn.bias", "dtype": "F32", "shape": [3 * n_embd]},
            {"name": p + "attn.c_proj.weight", "dtype": "F32", "shape": [n_embd, n_embd]},
            {"name": p + "attn.c_proj.bias", "dtype": "F32", "shape": [n_embd]},
            {"name": p + "ln_2.weight", "dtype": "F32", "shape": [n_embd], "init": "ones"},
            {"name": p + "ln_2.bias", "dtype": "F32", "shape": [n_embd], "init": "zeros"},
            {"name": p + "mlp.c_fc.weight", "dtype": "F32", "shape": [n_embd, 4 * n_embd]},
            {"name": p + "mlp.c_fc.bias", "dtype": "F32", "shape": [4 * n_embd]},
            {"name": p + "mlp.c_proj.weight", "dtype": "F32", "shape": [4 * n_embd, n_embd]},
            {"name": p + "mlp.c_proj.bias", "dtype": "F32", "shape": [n_embd]},
        ]
    gspecs += [{"name": "ln_f.weight", "dtype": "F32", "shape": [n_embd], "init": "ones"},
               {"name": "ln_f.bias", "dtype": "F32", "shape": [n_embd], "init": "zeros"}]
    gst = fx.put_safetensors(gspecs, rng, {"format": "pt"})
    gtok, gvocab = make_tokenizer_json(rng, 40 * 1024, special=("<|endoftext|>",))
    vocab = {("tok%d" % i): i for i in range(1500)}
    g.commit({
        ".gitattributes": GITATTRIBUTES,
        "README.md": readme("GPT-2", {"language": "en", "license": "mit"},
                            "Test replica of the gpt2 repository layout (tiny weights).\n"),
        "config.json": jdump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": n_embd,
                              "n_layer": n_layer, "n_head": 4, "n_positions": n_pos, "vocab_size": n_vocab}),
        "generation_config.json": jdump({"bos_token_id": 50256, "eos_token_id": 50256,
                                         "transformers_version": "4.26.0.dev0"}),
        "vocab.json": (json.dumps(vocab) + "\n").encode(),
        "merges.txt": ("#version: 0.2\n" + "".join("t o%d\n" % i for i in range(800))).encode(),
        "tokenizer.json": gtok,
        "model.safetensors": gst,
    }, "Initial commit")
    g.commit({"README.md": readme("GPT-2", {"language": "en", "license": "mit", "tags": ["exbert"]},
                                  "Test replica of the gpt2 repository layout (tiny weights). Updated.\n")},
             "Update README.md")
    g.meta["safetensors"] = param_counts(gst["header"])

    # --- dataset with a 1500-entry directory and a parquet convert ref ---------------------
    ds = fx.repo("dataset", "hubfs-test/big-dataset", created_ts=1706000000,
                 meta={"downloads": 321, "likes": 3,
                       "tags": ["task_categories:text-generation", "size_categories:1K<n<10K", "format:json"],
                       "cardData": {"license": "cc-by-4.0", "task_categories": ["text-generation"]}})
    files = {".gitattributes": GITATTRIBUTES,
             "README.md": readme("big-dataset", {"license": "cc-by-4.0"},
                                 "1500 small JSONL shards under data/.\n")}
    lens = rng.integers(25, 60, 1500)
    for i in range(1500):
        text = words_text(rng, int(lens[i]), line_words=1000).strip()
        files["data/part-%05d.jsonl" % i] = (json.dumps({"id": i, "text": text}) + "\n").encode()
    files["metadata.csv"] = ("id,file\n" + "".join("%d,data/part-%05d.jsonl\n" % (i, i) for i in range(1500))).encode()
    ds.commit(files, "Upload 1500 shards")
    pq = b"PAR1" + rng.bit_generator.random_raw(70 * 1024 // 8).tobytes() + b"PAR1"
    ds.converts["parquet"] = ds.commit({".gitattributes": GITATTRIBUTES, "default/train/0000.parquet": pq},
                                       "Update parquet files", parent=None, branch=None, author="bob")

    # --- space -------------------------------------------------------------------------
    sp = fx.repo("space", "hubfs-test/demo-space", created_ts=1707000000,
                 meta={"likes": 1, "tags": ["static", "region:us"], "sdk": "static",
                       "cardData": {"title": "Demo Space", "sdk": "static", "emoji": "\U0001F680"}})
    sp.commit({".gitattributes": GITATTRIBUTES,
               "README.md": readme("Demo Space", {"title": "Demo Space", "emoji": "\U0001F680", "sdk": "static",
                                                  "pinned": "false"}, "A static demo space.\n"),
               "index.html": b"<!doctype html>\n<html><body><h1>hubfs demo space</h1></body></html>\n",
               "style.css": b"body { font-family: sans-serif; }\n"}, "initial commit")

    # --- access-controlled repos -----------------------------------------------------------
    small_specs = [{"name": "model.embed_tokens.weight", "dtype": "BF16", "shape": [1024, 256]},
                   {"name": "model.norm.weight", "dtype": "F32", "shape": [256], "init": "ones"},
                   {"name": "lm_head.weight", "dtype": "BF16", "shape": [1024, 256]}]
    pm = fx.repo("model", "hubfs-test/private-model", private=True, readers=["alice"], created_ts=1708000000,
                 meta={"downloads": 0, "likes": 0, "library_name": "transformers", "tags": ["transformers"]})
    pm.commit({".gitattributes": GITATTRIBUTES,
               "README.md": readme("private-model", {"license": "other"}, "Private test model.\n"),
               "config.json": jdump({"model_type": "llama", "hidden_size": 256, "secret": "private"}),
               "model.safetensors": fx.put_safetensors(small_specs, rng)}, "Initial commit")
    gm = fx.repo("model", "hubfs-test/gated-model", gated="manual", gated_approved=["alice"], created_ts=1708100000,
                 meta={"downloads": 42, "likes": 2, "library_name": "transformers", "tags": ["transformers"],
                       "cardData": {"license": "other", "extra_gated_prompt": "Agree to the terms."}})
    gm.commit({".gitattributes": GITATTRIBUTES,
               "README.md": readme("gated-model", {"license": "other", "extra_gated_prompt": "Agree to the terms."},
                                   "Gated test model.\n"),
               "config.json": jdump({"model_type": "llama", "hidden_size": 256, "gated": True}),
               "model.safetensors": fx.put_safetensors(small_specs, rng)}, "Initial commit")
    dm = fx.repo("model", "hubfs-test/disabled-model", disabled=True, created_ts=1708200000,
                 meta={"downloads": 0, "likes": 0, "tags": []})
    dm.commit({".gitattributes": GITATTRIBUTES, "README.md": b"# disabled\n",
               "config.json": jdump({"model_type": "bert"})}, "Initial commit")
    am = fx.repo("model", "hubfs-test/another-model", created_ts=1708300000,
                 meta={"downloads": 5, "likes": 0, "library_name": "transformers", "tags": ["transformers", "bert"],
                       "pipeline_tag": "fill-mask"})
    am.commit({".gitattributes": GITATTRIBUTES, "README.md": b"# another model\n",
               "config.json": jdump({"model_type": "bert", "hidden_size": 32}),
               "vocab.txt": "".join("[unused%d]\n" % i for i in range(300)).encode()}, "Initial commit")
    # --- a checkpoint in three shards with its index (next-shard prefetch) -----------------
    sm = fx.repo("model", "hubfs-test/sharded-model", created_ts=1708350000,
                 meta={"downloads": 3, "likes": 0, "library_name": "transformers",
                       "tags": ["transformers", "safetensors", "llama"]})
    sspecs = llama_specs(4096, 512, 1376, 128, 4)
    write_sharded(fx, sm, [sspecs[:10], sspecs[10:24], sspecs[24:]], rng,
                  {".gitattributes": GITATTRIBUTES, "README.md": b"# sharded model\n",
                   "config.json": jdump({"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 4})},
                  "Upload sharded checkpoint")
    gd = fx.repo("dataset", "hubfs-test/gated-dataset", gated="auto", gated_approved=["alice"], created_ts=1708400000,
                 meta={"downloads": 1, "likes": 0, "tags": ["format:csv"]})
    gd.commit({".gitattributes": GITATTRIBUTES, "README.md": b"# gated dataset\n",
               "data.csv": b"a,b\n1,2\n3,4\n"}, "Initial commit")


def llama_specs(vocab, hidden, inter, kv_hidden, layers):
    specs = [{"name": "model.embed_tokens.weight", "dtype": "BF16", "shape": [vocab, hidden]}]
    for i in range(layers):
        specs += llama_layer_specs(i, hidden, inter, kv_hidden)
    specs += [{"name": "model.norm.weight", "dtype": "F32", "shape": [hidden], "init": "ones"},
              {"name": "lm_head.weight", "dtype": "BF16", "shape": [vocab, hidden]}]
    return specs


def write_sharded(fx, repo, specs_by_shard, rng, extra_files, title):
    n = len(specs_by_shard)
    files = dict(extra_files)
    weight_map = {}
    total = 0
    for k, specs in enumerate(specs_by_shard):
        name = "model-%05d-of-%05d.safetensors" % (k + 1, n)
        files[name] = fx.put_safetensors(specs, rng, {"format": "pt"})
        for s in specs:
            weight_map[s["name"]] = name
            total += spec_nbytes(s)
    files["model.safetensors.index.json"] = jdump({"metadata": {"total_size": total},
                                                   "weight_map": dict(sorted(weight_map.items()))})
    repo.commit(files, title)
    return files


def preset_demo(fx):
    fx.orgs += [{"name": "hubfs-demo", "fullname": "hubfs demo org"}]
    rng = np.random.default_rng(31337)
    vocab, hidden, inter, kv, layers = 32000, 1024, 2816, 256, 6
    specs = llama_specs(vocab, hidden, inter, kv, layers)
    # split: embeddings + first half of the layers in shard 1, the rest in shard 2
    cut = 1 + 9 * (layers // 2)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 16,
           "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
           "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False, "transformers_version": "4.44.0"}
    tok, _ = make_tokenizer_json(rng, 1500 * 1024)
    repo = fx.repo("model", "hubfs-demo/tiny-llama", created_ts=1710000000,
                   meta={"downloads": 100, "likes": 10, "library_name": "transformers",
                         "pipeline_tag": "text-generation",
                         "tags": ["transformers", "safetensors", "llama", "text-generation"]})
    extra = {".gitattributes": GITATTRIBUTES,
             "README.md": readme("tiny-llama", {"license": "apache-2.0", "library_name": "transformers"},
                                 "A randomly initialised ~256 MB Llama-style checkpoint in two shards.\n"),
             "config.json": jdump(cfg),
             "generation_config.json": jdump({"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048}),
             "tokenizer.json": tok,
             "tokenizer_config.json": jdump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                             "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer"}),
             "special_tokens_map.json": jdump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})}
    files = write_sharded(fx, repo, [specs[:cut], specs[cut:]], rng, extra, "Upload tiny-llama checkpoint")
    hdr = {}
    for k in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        hdr.update(files[k]["header"])
    repo.meta["safetensors"] = param_counts(hdr)


def preset_bench(fx):
    fx.orgs += [{"name": "hubfs-bench", "fullname": "hubfs bench org"}]
    rng = np.random.default_rng(4242)
    target = int(float(os.environ.get("HUBEMU_BENCH_SHARD_MB", "1100")) * 1024 * 1024)
    vocab = 32000
    hidden = 4096
    for h in (4096, 2048, 1024, 512, 256, 128):
        hidden = h
        if 24 * h * h * 3 <= target and vocab * h * 2 <= target:
            break
    inter = int(hidden * 2.6875) // 64 * 64
    kv = hidden
    layer_bytes = sum(spec_nbytes(s) for s in llama_layer_specs(0, hidden, inter, kv))
    emb = vocab * hidden * 2
    # shard 1: embeddings + layers until >= target; shard 2: layers + norm + lm_head >= target
    n1 = 1
    while emb + n1 * layer_bytes < target:
        n1 += 1
    n2 = 1
    while n2 * layer_bytes + emb + hidden * 4 < target:
        n2 += 1
    layers = n1 + n2
    specs = llama_specs(vocab, hidden, inter, kv, layers)
    cut = 1 + 9 * n1
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 128),
           "num_key_value_heads": max(1, hidden // 128), "vocab_size": vocab, "torch_dtype": "bfloat16"}
    repo = fx.repo("model", "hubfs-bench/llama-2shard", created_ts=1711000000,
                   meta={"downloads": 0, "likes": 0, "library_name": "transformers",
                         "pipeline_tag": "text-generation", "tags": ["transformers", "safetensors", "llama"]})
    tok, _ = make_tokenizer_json(rng, 500 * 1024)
    extra = {".gitattributes": GITATTRIBUTES, "README.md": b"# llama-2shard\n\nBenchmark checkpoint.\n",
             "config.json": jdump(cfg), "tokenizer.json": tok}
    write_sharded(fx, repo, [specs[:cut], specs[cut:]], rng, extra, "Upload benchmark checkpoint")

    ds = fx.repo("dataset", "hubfs-bench/small-files", created_ts=1711100000,
                 meta={"downloads": 0, "likes": 0, "tags": ["format:text"]})
    files = {".gitattributes": GITATTRIBUTES, "README.md": b"# small-files\n\n2000 small text files.\n"}
    layout = [("train", 1000), ("validation", 400), ("test", 400), ("extra/nested", 200)]
    sizes = rng.integers(2048, 8193, 2000)
    k = 0
    for d, count in layout:
        for i in range(count):
            size = int(sizes[k])
            text = words_text(rng, size // 5 + 20).encode()[:size]
            files["%s/file-%05d.txt" % (d, i)] = text
            k += 1
    ds.commit(files, "Upload 2000 small files")


PRESETS = {"test": preset_test, "demo": preset_demo, "bench": preset_bench}


def generate(out_dir, preset):
    if os.path.exists(os.path.join(out_dir, "repos.json")):
        os.unlink(os.path.join(out_dir, "repos.json"))
    os.makedirs(out_dir, exist_ok=True)
    fx = Fixture(out_dir, preset)
    PRESETS[preset](fx)
    fx.write()
    return os.path.join(out_dir, "repos.json")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="test")
    args = ap.parse_args(argv)
    t0 = time.time()
    path = generate(args.out_dir, args.preset)
    total = 0
    for name in os.listdir(os.path.join(args.out_dir, "objects")):
        total += os.path.getsize(os.path.join(args.out_dir, "objects", name))
    print("wrote %s (%d objects bytes) in %.1fs" % (path, total, time.time() - t0))


if __name__ == "__main__":
    main()
