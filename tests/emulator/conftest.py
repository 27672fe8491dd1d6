"""Fixtures for the hub emulator tests.

The `test` fixture preset is generated once per session into a fresh temporary directory;
emulator instances are started per module (and stopped by PID at the end, even on failure).
"""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hubemu_testlib import Client, Fixture  # noqa: E402

import gen_fixture  # noqa: E402
from hubemu import Emulator  # noqa: E402


@pytest.fixture(scope="session")
def fixture_dir():
    d = tempfile.mkdtemp(prefix="hubemu-fixture-")
    out = os.path.join(d, "fx")
    gen_fixture.generate(out, "test")
    yield out
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fresh_dir():
    """A fresh temporary directory (tempfile.mkdtemp), removed after the test."""
    d = tempfile.mkdtemp(prefix="hubemu-test-")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def fx(fixture_dir):
    return Fixture(fixture_dir)


@pytest.fixture(scope="module")
def emu(fixture_dir):
    with Emulator(fixture_dir) as e:
        yield e


@pytest.fixture(scope="module")
def emu200(fixture_dir):
    with Emulator(fixture_dir, small_file_redirect=200) as e:
        yield e


@pytest.fixture
def hub(emu):
    c = Client(emu.hub_url)
    yield c
    c.close()
