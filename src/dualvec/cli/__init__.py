"""The `dualvec` command line. Exit codes: 0 ok, 1 error, 2 usage, 3 verify found
differences, 130 interrupted (resumable). Data goes to stdout, logs and progress to stderr."""

from __future__ import annotations

from dualvec.cli.main import main

__all__ = ["main"]
