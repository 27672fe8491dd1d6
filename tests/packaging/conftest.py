"""Packaging tests: the Debian package built by packaging/build-deb (select with -m deb)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "deb: builds, installs, mounts and purges the Debian package (root, ~2 min)")
