"""Helpers for testing code that uses dualvec, and the conformance suite every store passes.

Importing `dualvec.testing.conformance` needs pytest.
"""

from __future__ import annotations

from dualvec.testing.data import SAMPLE_FIELDS, make_records, sample_spec

__all__ = ["SAMPLE_FIELDS", "make_records", "sample_spec"]
