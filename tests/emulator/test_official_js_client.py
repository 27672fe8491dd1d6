"""Validate the emulator with the official JS client (@huggingface/hub, pinned in js/package.json).

Runs `npm ci --no-audit --no-fund` in tests/emulator/js, starts the emulator and runs
`node --test` there (js/hub-client.test.mjs). Requires node and npm (and access to the npm
registry or a warm npm cache); the test fails, rather than skips, when they are missing.
"""

import os
import shutil
import subprocess

import pytest

from hubemu import Emulator

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def _run(cmd, timeout, env=None):
    try:
        return subprocess.run(cmd, cwd=JS_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, text=True)
    except subprocess.TimeoutExpired as e:
        pytest.fail("%s timed out after %ss:\n%s" % (" ".join(cmd), timeout, (e.stdout or "")[-4000:]))


@pytest.fixture(scope="session")
def js_installed():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are required for the official JS client check "
                    "(apt-get install nodejs npm); found node=%r npm=%r" % (node, npm))
    r = _run([npm, "ci", "--no-audit", "--no-fund"], timeout=600)
    if r.returncode != 0:
        pytest.fail("npm ci failed (is the npm registry reachable?):\n%s" % r.stdout[-4000:])
    return node


@pytest.mark.parametrize("small_file_redirect", [307, 200])
def test_official_js_client(js_installed, fixture_dir, small_file_redirect):
    with Emulator(fixture_dir, small_file_redirect=small_file_redirect) as emu:
        env = dict(os.environ, HUBEMU_HUB_URL=emu.hub_url, HUBEMU_FIXTURE=fixture_dir, NO_COLOR="1")
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(k, None)
        r = _run([js_installed, "--test"], timeout=300, env=env)
        assert r.returncode == 0, "node --test failed:\n%s" % r.stdout[-8000:]
        assert "# fail 0" in r.stdout
        recs = emu.wait_log(lambda rs: any(x["origin"] == "cdn" for x in rs))
        cdn = [x for x in recs if x["origin"] == "cdn"]
        hub = [x for x in recs if x["origin"] == "hub"]
        # fetch() drops Authorization on the cross-origin redirect: the CDN never sees a token,
        # although the hub received it for the private/gated downloads
        assert cdn and not any(x["auth"] for x in cdn)
        assert any(x["auth"] and "/private-model/resolve/" in x["path"] for x in hub)
        assert all(x["status"] in (200, 206, 304) for x in cdn)
