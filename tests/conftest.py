from __future__ import annotations

import os

import pytest


def require(condition: bool, package: str) -> None:
    """Skip a test that needs a system package, but fail on CI where nothing may be skipped."""
    if condition:
        return
    message = f"needs the Debian package {package!r} (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """No test reads the repository's config/dualvec.toml or the developer's DUALVEC_* variables."""
    for key in list(os.environ):
        if key.startswith("DUALVEC_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
