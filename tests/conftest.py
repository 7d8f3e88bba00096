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
