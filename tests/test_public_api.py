"""The names users import from `dualvec` are exactly the ones we mean to support."""

from __future__ import annotations

import dualvec


def test_public_surface():
    assert set(dualvec.__all__) == {
        "MAX_K",
        "AsyncRouter",
        "BackendMissingError",
        "CollectionSpec",
        "ConfigError",
        "DualvecError",
        "DualvecMetrics",
        "ExtensionLoadError",
        "FieldSpec",
        "Filter",
        "Hit",
        "MemoryStore",
        "Migration",
        "ModelMismatchError",
        "Record",
        "Router",
        "Settings",
        "StoreError",
        "StoreLockedError",
        "UnsupportedMetricError",
        "ValidationError",
        "VectorStore",
        "__version__",
        "configure_logging",
        "load_settings",
        "open_store",
        "routing_key",
    }
    for name in dualvec.__all__:
        assert hasattr(dualvec, name), name


def test_every_error_is_a_dualvec_error():
    errors = [getattr(dualvec, n) for n in dualvec.__all__ if n.endswith("Error")]
    assert all(issubclass(e, dualvec.DualvecError) for e in errors)


def test_importing_dualvec_opens_no_backend():
    import subprocess
    import sys

    heavy = ("lancedb", "qdrant_client", "sqlite_vss")
    code = f"import sys, dualvec; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_specs_refuse_hostile_names_with_a_dualvec_error():
    import pytest

    with pytest.raises(dualvec.ConfigError, match="collection name 'x; DROP TABLE t' is not allowed"):
        dualvec.CollectionSpec(name="x; DROP TABLE t", dim=3, model="m")
    with pytest.raises(dualvec.ConfigError, match="field source"):
        dualvec.FieldSpec(type="str", source="a b")
    spec = dualvec.CollectionSpec(name="docs", dim=3, model="m", fields={"lang": "str"})
    assert spec.fields["lang"] == dualvec.FieldSpec(type="str")
