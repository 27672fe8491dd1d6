// Runs the official @huggingface/hub client against a running hub emulator.
//
//   HUBEMU_HUB_URL=http://127.0.0.1:PORT HUBEMU_FIXTURE=/path/to/fixture node --test
//
// (tests/emulator/test_official_js_client.py starts the emulator and runs this.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, mkdtempSync, rmSync, readlinkSync, lstatSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
	listFiles,
	pathsInfo,
	fileDownloadInfo,
	downloadFile,
	fileExists,
	modelInfo,
	datasetInfo,
	downloadFileToCacheDir,
	snapshotDownload,
	listModels,
} from "@huggingface/hub";

const hubUrl = process.env.HUBEMU_HUB_URL;
const fixtureDir = process.env.HUBEMU_FIXTURE;
if (!hubUrl || !fixtureDir) {
	throw new Error("set HUBEMU_HUB_URL and HUBEMU_FIXTURE");
}

const fixture = JSON.parse(readFileSync(join(fixtureDir, "repos.json"), "utf8"));
const TINY = "hubfs-test/tiny-model";
const PRIVATE = "hubfs-test/private-model";
const alice = "hf_alice";
const bob = "hf_bob";

function repo(id, type = "model") {
	const r = fixture.repos.find((x) => x.id === id && x.type === type);
	assert.ok(r, `fixture repo ${type}/${id}`);
	return r;
}

function commitOf(id, rev = "main", type = "model") {
	const r = repo(id, type);
	const cid = r.refs.branches[rev] ?? r.refs.tags[rev] ?? rev;
	const c = r.commits.find((x) => x.id === cid);
	assert.ok(c, `commit ${rev} of ${id}`);
	return c;
}

function sha256(buf) {
	return createHash("sha256").update(buf).digest("hex");
}

async function blobSha(blob) {
	assert.ok(blob, "downloadFile returned null");
	return sha256(Buffer.from(await blob.arrayBuffer()));
}

test("listFiles recursive matches the fixture tree (branch main)", async () => {
	const main = commitOf(TINY);
	const files = [];
	const dirs = [];
	for await (const e of listFiles({ repo: TINY, recursive: true, hubUrl })) {
		(e.type === "file" ? files : dirs).push(e);
	}
	assert.deepEqual(files.map((f) => f.path).sort(), Object.keys(main.files).sort());
	assert.deepEqual(dirs.map((d) => d.path).sort(), ["a", "a/b", "a/b/c", "docs", "onnx"]);
	const st = files.find((f) => f.path === "model.safetensors");
	assert.equal(st.lfs.oid, main.files["model.safetensors"].sha256);
	assert.equal(st.size, main.files["model.safetensors"].size);
	assert.equal(st.oid, main.files["model.safetensors"].oid);
});

test("listFiles follows Link pagination (1500-entry directory)", async () => {
	let n = 0;
	for await (const e of listFiles({ repo: { type: "dataset", name: "hubfs-test/big-dataset" }, path: "data", hubUrl })) {
		assert.equal(e.type, "file");
		n++;
	}
	assert.equal(n, 1500);
});

test("listFiles with expand, tag and commit revisions", async () => {
	const v1 = commitOf(TINY, "v1.0");
	const paths = [];
	for await (const e of listFiles({ repo: TINY, revision: "v1.0", expand: true, hubUrl })) {
		assert.ok(e.lastCommit?.id, "lastCommit with expand");
		paths.push(e.path);
	}
	assert.ok(paths.includes("old-notes.txt"));
	const byCommit = [];
	for await (const e of listFiles({ repo: TINY, revision: v1.id, recursive: true, hubUrl })) {
		if (e.type === "file") byCommit.push(e.path);
	}
	assert.deepEqual(byCommit.sort(), Object.keys(v1.files).sort());
	const dev = [];
	for await (const e of listFiles({ repo: TINY, revision: "dev", hubUrl })) dev.push(e.path);
	assert.ok(dev.includes("dev-only.txt"));
});

test("listFiles on a private repo needs a token with access", async () => {
	const files = [];
	for await (const e of listFiles({ repo: PRIVATE, hubUrl, accessToken: alice })) files.push(e.path);
	assert.ok(files.includes("model.safetensors"));
	await assert.rejects(async () => {
		for await (const _ of listFiles({ repo: PRIVATE, hubUrl })) {
		}
	}, /401|Invalid username|not found/i);
	await assert.rejects(async () => {
		for await (const _ of listFiles({ repo: PRIVATE, hubUrl, accessToken: bob })) {
		}
	});
});

test("pathsInfo (JSON body) with expand", async () => {
	const main = commitOf(TINY);
	const info = await pathsInfo({ repo: TINY, paths: ["config.json", "model.safetensors", "missing.txt", "a/b"], expand: true, hubUrl });
	assert.deepEqual(info.map((x) => x.path), ["config.json", "model.safetensors", "a/b"]);
	assert.equal(info[0].oid, main.files["config.json"].oid);
	assert.equal(info[1].lfs.oid, main.files["model.safetensors"].sha256);
	assert.equal(info[1].lfs.pointerSize, main.files["model.safetensors"].pointer_size);
	assert.ok(info[0].lastCommit.date instanceof Date && !isNaN(info[0].lastCommit.date));
	assert.equal(info[2].type, "directory");
	const pr = await pathsInfo({ repo: TINY, paths: ["pr-notes.txt"], revision: "refs/pr/1", hubUrl });
	assert.equal(pr.length, 1);
});

test("fileDownloadInfo for regular and LFS files", async () => {
	const main = commitOf(TINY);
	const small = await fileDownloadInfo({ repo: TINY, path: "config.json", hubUrl });
	assert.equal(small.size, main.files["config.json"].size);
	assert.equal(small.etag, `"${main.files["config.json"].oid}"`);
	const big = await fileDownloadInfo({ repo: TINY, path: "model.safetensors", hubUrl });
	assert.equal(big.size, main.files["model.safetensors"].size);
	assert.ok(big.etag);
	assert.equal(big.xet, undefined);
	assert.equal(await fileDownloadInfo({ repo: TINY, path: "nope.bin", hubUrl }), null);
});

test("downloadFile (xet: false) bytes match the fixture", async () => {
	const main = commitOf(TINY);
	for (const path of ["config.json", "tokenizer.json", "model.safetensors", "onnx/model.onnx", "file@1.txt",
		"docs/hello w\u00f6rld \u00fc.txt", "text-64k.txt", "small.bin"]) {
		const blob = await downloadFile({ repo: TINY, path, hubUrl, xet: false });
		assert.equal(await blobSha(blob), main.files[path].sha256, path);
	}
	// a slice of an LFS file (Range through the redirect)
	const blob = await downloadFile({ repo: TINY, path: "model.safetensors", hubUrl, xet: false });
	const head = Buffer.from(await blob.slice(0, 8).arrayBuffer());
	const all = readFileSync(join(fixtureDir, "objects", main.files["model.safetensors"].sha256));
	assert.deepEqual(head, all.subarray(0, 8));
	const mid = Buffer.from(await blob.slice(1000, 5000).arrayBuffer());
	assert.deepEqual(mid, all.subarray(1000, 5000));
	assert.equal(await downloadFile({ repo: TINY, path: "nope.txt", hubUrl, xet: false }), null);
});

test("downloadFile on branch, tag, PR and commit revisions", async () => {
	const r = repo(TINY);
	const cases = [
		["v1.0", "config.json", r.refs.tags["v1.0"]],
		[r.refs.tags["v1.0"], "config.json", r.refs.tags["v1.0"]],
		["dev", "dev-only.txt", r.refs.branches.dev],
		["refs/pr/1", "pr-notes.txt", r.refs.pull_requests["1"]],
		["main", "config.json", r.refs.branches.main],
	];
	for (const [revision, path, cid] of cases) {
		const c = r.commits.find((x) => x.id === cid);
		const blob = await downloadFile({ repo: TINY, path, revision, hubUrl, xet: false });
		assert.equal(await blobSha(blob), c.files[path].sha256, `${revision}:${path}`);
	}
	const v1 = await downloadFile({ repo: TINY, path: "config.json", revision: "v1.0", hubUrl, xet: false });
	const main = await downloadFile({ repo: TINY, path: "config.json", hubUrl, xet: false });
	assert.notEqual(await v1.text(), await main.text());
});

test("private and gated repos with tokens", async () => {
	const p = commitOf(PRIVATE);
	const blob = await downloadFile({ repo: PRIVATE, path: "model.safetensors", hubUrl, accessToken: alice, xet: false });
	assert.equal(await blobSha(blob), p.files["model.safetensors"].sha256);
	await assert.rejects(() => downloadFile({ repo: PRIVATE, path: "config.json", hubUrl, xet: false }));
	await assert.rejects(() => downloadFile({ repo: PRIVATE, path: "config.json", hubUrl, accessToken: bob, xet: false }));
	const g = commitOf("hubfs-test/gated-model");
	const gb = await downloadFile({ repo: "hubfs-test/gated-model", path: "model.safetensors", hubUrl, accessToken: alice, xet: false });
	assert.equal(await blobSha(gb), g.files["model.safetensors"].sha256);
	await assert.rejects(() => downloadFile({ repo: "hubfs-test/gated-model", path: "config.json", hubUrl, accessToken: bob, xet: false }));
});

test("fileExists (HEAD /raw/)", async () => {
	assert.equal(await fileExists({ repo: TINY, path: "config.json", hubUrl }), true);
	assert.equal(await fileExists({ repo: TINY, path: "model.safetensors", hubUrl }), true);
	assert.equal(await fileExists({ repo: TINY, path: "missing.txt", hubUrl }), false);
	assert.equal(await fileExists({ repo: TINY, path: "old-notes.txt", revision: "v1.0", hubUrl }), true);
	assert.equal(await fileExists({ repo: TINY, path: "old-notes.txt", hubUrl }), false);
	assert.equal(await fileExists({ repo: PRIVATE, path: "config.json", hubUrl, accessToken: alice }), true);
	assert.equal(await fileExists({ repo: PRIVATE, path: "config.json", hubUrl, accessToken: bob }), false);
});

test("modelInfo / datasetInfo, legacy alias and revisions", async () => {
	const r = repo(TINY);
	const info = await modelInfo({ name: TINY, hubUrl, additionalFields: ["sha", "siblings"] });
	assert.equal(info.name, TINY);
	assert.equal(info.id, r._id);
	assert.equal(info.sha, r.refs.branches.main);
	assert.equal(info.private, false);
	assert.equal(info.gated, false);
	assert.equal(info.task, "text-generation");
	assert.ok(info.updatedAt instanceof Date && !isNaN(info.updatedAt));
	const v1 = await modelInfo({ name: TINY, hubUrl, revision: "v1.0", additionalFields: ["sha"] });
	assert.equal(v1.sha, r.refs.tags["v1.0"]);
	const legacy = await modelInfo({ name: "gpt2", hubUrl });
	assert.equal(legacy.name, "openai-community/gpt2");
	const priv = await modelInfo({ name: PRIVATE, hubUrl, accessToken: alice });
	assert.equal(priv.private, true);
	await assert.rejects(() => modelInfo({ name: PRIVATE, hubUrl }));
	const gated = await modelInfo({ name: "hubfs-test/gated-model", hubUrl });
	assert.equal(gated.gated, "manual");
	const ds = await datasetInfo({ name: "hubfs-test/big-dataset", hubUrl, additionalFields: ["sha"] });
	assert.equal(ds.sha, repo("hubfs-test/big-dataset", "dataset").refs.branches.main);
});

test("legacy alias downloads follow the relative 307", async () => {
	const g = commitOf("openai-community/gpt2");
	const blob = await downloadFile({ repo: "gpt2", path: "config.json", hubUrl, xet: false });
	assert.equal(await blobSha(blob), g.files["config.json"].sha256);
	const lfs = await downloadFile({ repo: "gpt2", path: "model.safetensors", hubUrl, xet: false });
	assert.equal(await blobSha(lfs), g.files["model.safetensors"].sha256);
});

test("listModels paginates an org", async () => {
	const ids = [];
	for await (const m of listModels({ search: { owner: "hubfs-test" }, hubUrl })) ids.push(m.name);
	assert.ok(ids.length > 3, ids.join(","));
	assert.ok(ids.includes(TINY));
	assert.ok(!ids.includes(PRIVATE));
});

test("downloadFileToCacheDir and snapshotDownload build a valid cache", async () => {
	const cacheDir = mkdtempSync(join(tmpdir(), "hubemu-js-cache-"));
	try {
		const main = commitOf(TINY);
		const p = await downloadFileToCacheDir({ repo: TINY, path: "model.safetensors", hubUrl, cacheDir });
		assert.equal(sha256(readFileSync(p)), main.files["model.safetensors"].sha256);
		assert.ok(lstatSync(p).isSymbolicLink());
		assert.ok(readlinkSync(p).includes(main.files["model.safetensors"].sha256));
		const another = commitOf("hubfs-test/another-model");
		const snap = await snapshotDownload({ repo: "hubfs-test/another-model", hubUrl, cacheDir });
		assert.ok(snap.endsWith(another.id));
		for (const [path, e] of Object.entries(another.files)) {
			assert.equal(sha256(readFileSync(join(snap, path))), e.sha256, path);
		}
		assert.equal(readFileSync(join(cacheDir, "models--hubfs-test--another-model", "refs", "main"), "utf8"), another.id);
		assert.ok(existsSync(join(cacheDir, "models--hubfs-test--another-model", "blobs")));
	} finally {
		rmSync(cacheDir, { recursive: true, force: true });
	}
});
