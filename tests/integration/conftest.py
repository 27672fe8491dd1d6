"""Shared fixtures: one generated fixture per session, one emulator and mount per module."""
import os
import shutil
import signal
import tempfile

import pytest

from harness import Fixture, Mount  # noqa: F401  (re-exported for tests)

from hubemu import Emulator


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped in the sanitizer pass")
    # A shell without job control starts background commands with SIGINT ignored, and an ignored
    # signal stays ignored in every child: the daemons and readers the tests interrupt with SIGINT
    # would never see it. A handler here is reset to the default in each child at exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def fixture():
    d = tempfile.mkdtemp(prefix="hubfs-fixture-")
    try:
        yield Fixture.generate(os.path.join(d, "fx"), "test")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def emu(fixture):
    e = Emulator(fixture.path)
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture(scope="module")
def mnt(emu):
    """A mount with alice's token (she can read the private and gated repos)."""
    m = Mount(emu.hub_url, token="hf_alice")
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def anon(emu):
    """A mount without a token."""
    m = Mount(emu.hub_url)
    try:
        yield m
    finally:
        m.stop()
