"""The README's first command: tools/demo's main job (tools/demo.py) runs end to end and says so."""
import os
import re
import subprocess

from harness import HUBFS_BIN, ROOT


def test_demo_loads_the_model_through_the_mount_and_cleans_up(tmp_path):
    env = dict(os.environ, HUBFS_BIN=HUBFS_BIN, TMPDIR=str(tmp_path))
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "demo.py")], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # Every shard's bytes, read back through the mount, hash to the fixture's SHA-256.
    assert len(re.findall(r"^sha256 model-0000\d-of-00002\.safetensors OK$", out, re.M)) == 2, out
    assert "MISMATCH" not in out
    # Both loads ran and printed their ratio to the baseline measured beside them.
    assert re.search(r"^load cold: .* [1-9]\d* tensors, .* MiB in [\d.]+ s = .*x the time of download, then load\)$",
                     out, re.M), out
    assert re.search(r"^load warm: .* [1-9]\d* tensors, .* MiB in [\d.]+ s = .*x the time of local copies' load\)$",
                     out, re.M), out
    # Read twice, fetched once: the second load came from hubfs's cache, not the origin.
    m = re.search(r"^origin \(CDN\) bytes fetched by hubfs: (\d+) MiB for (\d+) MiB of shards read twice$", out, re.M)
    assert m and m.group(1) == m.group(2), out
    assert out.rstrip().endswith("unmounted, emulator stopped"), out
    # It left no mount and no files behind.
    assert os.listdir(tmp_path) == []
    with open("/proc/self/mounts") as f:
        assert str(tmp_path) not in f.read()
