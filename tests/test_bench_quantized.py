"""`dualvec bench` on real SQLite files: the exact/quantized ladder of a quantized sqlite-vec
target, the smallest oversample reaching a named recall, the min_recall to set, A/A runs, an
exact target (with and without a temporary quantized copy), and refused options.

Every recall the bench reports is re-measured here without the bench's code: true neighbours in
float64 NumPy, quantized answers straight from the store opened at that oversample."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dualvec import CollectionSpec, Record, open_store
from dualvec.cli.main import cli

DIM, N, K, QUERIES = 64, 1500, 10, 60
LADDER = "1,2,4,8,32,150"  # 150 x k candidates cover the whole collection: exact
CONFIG = """
flag_file = "{data}/.dualvec/flags.json"
outbox_path = "{data}/.dualvec/outbox.db"

[collections.emb]
legacy_url = "sqlite-blob://{data}/legacy.db"
target_url = "sqlite-vec://{data}/target.db"
{index}
dim = {dim}
metric = "cosine"
model = "m"
"""


def clustered(seed: int = 7) -> np.ndarray:
    """Embedding-like vectors: 15 cluster centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N // 100, DIM))
    return (centres[rng.integers(0, len(centres), N)] + 0.7 * rng.standard_normal((N, DIM))).astype(
        np.float32
    )


SPEC = CollectionSpec(name="emb", dim=DIM, metric="cosine", model="m")
VECTORS = clustered()
IDS = [f"r{i}" for i in range(N)]


def build(folder: Path, index: str) -> None:
    """The same records in a legacy SQLite BLOB table and a sqlite-vec target with `index`."""
    records = [Record(i, v) for i, v in zip(IDS, VECTORS, strict=True)]
    for url in (f"sqlite-blob://{folder}/legacy.db", f"sqlite-vec://{folder}/target.db?{index}"):
        store = open_store(url, SPEC)
        store.upsert(records)
        store.close()
    toml = "\n".join(
        f'{key} = "{value}"' if key == "quantize" else f"{key} = {value}"
        for key, value in (part.split("=") for part in index.split("&") if part)
    )
    (folder / "dualvec.toml").write_text(CONFIG.format(data=folder, index=toml, dim=DIM))


def bench(folder: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["bench", *args], env={"DUALVEC_CONFIG": str(folder / "dualvec.toml")})
    return result.exit_code, result.stdout, result.stderr


def true_top(query_id: str) -> list[str]:
    """The k nearest other records by cosine, in float64."""
    matrix = VECTORS.astype(np.float64)
    query = matrix[IDS.index(query_id)]
    distance = 1 - matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    order = [IDS[i] for i in np.argsort(distance, kind="stable") if IDS[i] != query_id]
    return order[:K]


def measured_recalls(folder: Path, oversample: int, query_ids: list[str]) -> list[float]:
    """Per-query recall@k of the target searched at `oversample`, each query's own record left
    out (asked for k+1), against the NumPy truth."""
    store = open_store(f"sqlite-vec://{folder}/target.db?quantize=bit&oversample={oversample}", SPEC)
    try:
        recalls = []
        for query_id in query_ids:
            vector = VECTORS[IDS.index(query_id)]
            found = [h.id for h in store.search(vector, K + 1) if h.id != query_id][:K]
            recalls.append(len(set(found) & set(true_top(query_id))) / K)
        return recalls
    finally:
        store.close()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.db"))}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench-quantized")
    build(folder, "quantize=bit&oversample=4")
    return folder


@pytest.fixture(scope="module")
def report(quantized) -> dict:
    code, out, err = bench(
        quantized,
        "--json",
        "--queries",
        str(QUERIES),
        "-k",
        str(K),
        "--ladder",
        LADDER,
        "--recall",
        "0.9",
        "--aa",
    )
    assert code == 0, err
    return json.loads(out)["collections"]["emb"]


def test_every_rung_reports_the_recall_numpy_measures(quantized, report):
    ladder = report["quantized"]
    assert ladder["status"] == "quantized" and ladder["source"] == "target"
    assert [r["oversample"] for r in ladder["rungs"]] == [1, 2, 4, 8, 32, 150]
    query_ids = report["query_ids"]
    assert len(query_ids) == len(set(query_ids)) == QUERIES
    for rung in ladder["rungs"]:
        recalls = measured_recalls(quantized, rung["oversample"], query_ids)
        assert rung["recall"]["mean"] == pytest.approx(np.mean(recalls), abs=1e-4), rung["oversample"]
        assert rung["recall"]["min"] == pytest.approx(min(recalls), abs=1e-4)
        # Under the default min_recall = 1.0, every query that missed a neighbour is a mismatch.
        assert rung["mismatches"] == sum(r < 1 for r in recalls)
        assert rung["max_distance_delta"] < 1e-5  # rescored with exact distances
    by_oversample = {r["oversample"]: r for r in ladder["rungs"]}
    # Candidates covering every record make the quantized search exact.
    assert by_oversample[150]["recall"]["mean"] == 1.0 and by_oversample[150]["mismatches"] == 0
    assert by_oversample[32]["recall"]["mean"] > by_oversample[1]["recall"]["mean"]
    assert by_oversample[1]["recall"]["mean"] < 0.9  # so that the ladder has something to find


def test_the_smallest_oversample_reaching_the_recall_reaches_it_and_the_one_before_does_not(
    quantized, report
):
    reaching = report["quantized"]["reaching"]
    assert report["quantized"]["wanted_recall"] == 0.9
    chosen = reaching["oversample"]
    assert np.mean(measured_recalls(quantized, chosen, report["query_ids"])) >= 0.9
    smaller = [r["oversample"] for r in report["quantized"]["rungs"] if r["oversample"] < chosen]
    if smaller:
        assert np.mean(measured_recalls(quantized, smaller[-1], report["query_ids"])) < 0.9


def test_threshold_advice_follows_the_measured_recall(quantized, report):
    for advice in (report["quantized"]["configured"], report["quantized"]["reaching"]):
        recalls = np.array(measured_recalls(quantized, advice["oversample"], report["query_ids"]))
        shadow = advice["shadow_min_recall"]
        assert advice["expected_mismatch_ratio"] == pytest.approx(np.mean(recalls < shadow), abs=1e-4)
        # mean - 3 sd, down to a multiple of 1/k; the guard's: mean - 3 sd / sqrt(100 comparisons).
        floor = math.floor(max(recalls.mean() - 3 * recalls.std(), 0) * K + 1e-9) / K
        assert shadow == pytest.approx(floor, abs=1e-4)
        assert advice["guard_min_recall"] == pytest.approx(recalls.mean() - 0.3 * recalls.std(), abs=1e-4)
        assert shadow <= advice["guard_min_recall"] <= recalls.mean()
        assert advice["guard_max_mismatch_ratio"] >= max(advice["expected_mismatch_ratio"], 0.01)
    assert report["quantized"]["configured"]["oversample"] == 4
    # The stores' own advice comes from the target against legacy (exact), which is the
    # configured oversample against exact here.
    assert report["advice"] == {
        key: value for key, value in report["quantized"]["configured"].items() if key in report["advice"]
    }


def test_aa_shows_no_noise_for_exact_stores_and_the_recall_spread_of_the_quantized_target(quantized, report):
    for role in ("legacy", "target"):
        assert report["aa"][role]["comparisons"] == QUERIES
        assert report["aa"][role]["mismatches"] == 0
        assert report["aa"][role]["recall"]["mean"] == report["aa"][role]["recall"]["min"] == 1.0
    # Legacy is exact, so the target's recall against it is its recall against exact.
    recalls = measured_recalls(quantized, 4, report["query_ids"])
    assert report["target_vs_legacy"]["recall"]["mean"] == pytest.approx(np.mean(recalls), abs=1e-4)
    assert report["target_vs_legacy"]["mismatches"] == sum(r < 1 for r in recalls)
    assert report["thresholds"] == {"min_recall": 1.0, "max_distance_delta": 1e-4}


def test_human_output_names_the_oversample_and_min_recall_to_set(quantized):
    code, out, err = bench(quantized, "--queries", "20", "--ladder", "1,150", "--recall", "0.9", "--aa")
    assert code == 0, err
    assert "quantize=bit, against exact = full scan of the float vectors" in out
    assert "thresholds for these stores: shadow.min_recall = " in out
    assert "recall 0.9: oversample 150 is the smallest reaching it" in out
    assert (
        "set oversample=150, shadow.min_recall = 1, guard.min_recall = 1, guard.max_mismatch_ratio = 0.01"
        in out
    )
    assert "legacy  0 mismatches of 20" in out and "target  0 mismatches of 20" in out
    assert "target against exact (oversample 4)" in out
    code, out, _ = bench(quantized, "--queries", "20", "--ladder", "1", "--recall", "0.999")
    assert code == 0
    assert "recall 0.999: no oversample of 1,4 reaches it" in out


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0", "above 0 and at most 1"),
        ("1.5", "above 0 and at most 1"),
        ("-0.2", "above 0 and at most 1"),
        ("abc", "is not a recall"),
        ("nan", "is not a recall"),
        ("95", "use 0.95"),
    ],
)
def test_a_bad_recall_is_refused_before_any_store_is_opened(quantized, value, says):
    before = digest(quantized)
    code, _, err = bench(quantized, "--recall", value)
    assert code == 2
    assert "--recall" in err and says in err and "e.g. --recall 0.95" in err
    assert digest(quantized) == before


@pytest.mark.parametrize("ladder", ["0,2", "a", "", "5000"])
def test_a_bad_ladder_is_refused(quantized, ladder):
    code, _, err = bench(quantized, "--ladder", ladder)
    assert code == 2
    assert "--ladder" in err and "comma-separated" in err


def test_an_exact_target_says_how_to_try_quantized_and_a_temporary_copy_measures_it(tmp_path, monkeypatch):
    build(tmp_path, "")
    code, out, _ = bench(tmp_path, "--json", "--queries", "20")
    assert code == 0
    ladder = json.loads(out)["collections"]["emb"]["quantized"]
    assert ladder["status"] == "exact"
    assert "not quantized; set quantize=bit" in ladder["hint"]

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = digest(tmp_path)
    code, out, err = bench(
        tmp_path, "--json", "--queries", "20", "--try-quantize", "bit", "--ladder", "1,150"
    )
    assert code == 0, err
    ladder = json.loads(out)["collections"]["emb"]["quantized"]
    assert ladder["status"] == "quantized" and ladder["source"] == "temporary copy"
    assert ladder["layout"] == "quantize=bit"
    assert ladder["exact_method"] == "the target's own exact search"
    rungs = {r["oversample"]: r for r in ladder["rungs"]}
    assert rungs[150]["recall"]["mean"] == 1.0
    assert rungs[1]["recall"]["mean"] < 1.0
    assert list(scratch.iterdir()) == []  # the copy is gone
    assert digest(tmp_path) == before  # neither store was written
