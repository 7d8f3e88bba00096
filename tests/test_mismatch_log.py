from __future__ import annotations

import json
import multiprocessing
import threading

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from dualvec.cli.mismatches import mismatches
from dualvec.errors import ConfigError
from dualvec.mismatch_log import MismatchLog, MismatchSample, utc_now
from dualvec.records import Hit


def sample(query_id: str = "q1", reasons: tuple[str, ...] = ("recall 0.500 below 1.0",)) -> MismatchSample:
    return MismatchSample(
        timestamp=utc_now(),
        query_id=query_id,
        routing_key_hash="3f2a9c0d1e4b5a6f",
        served_store="target",
        k=2,
        recall=0.5,
        rank_agreement=1.0,
        max_distance_delta=0.0,
        reasons=reasons,
        legacy=(Hit("doc-1", 0.1), Hit("doc-2", 0.2)),
        target=(Hit("doc-1", 0.1), Hit("doc-9", 0.25)),
    )


def test_a_sample_round_trips_through_the_file(tmp_path):
    log = MismatchLog(tmp_path / "m.jsonl")
    original = sample()
    log.record(original)
    assert log.latest(5) == [original]


def test_a_sample_is_logged_as_a_structlog_event_too(tmp_path):
    with capture_logs() as events:
        MismatchLog(tmp_path / "m.jsonl").record(sample())
    (event,) = events
    assert event["event"] == "shadow_mismatch"
    assert event["log_level"] == "warning"
    assert event["query_id"] == "q1"
    assert event["legacy"] == [{"id": "doc-1", "distance": 0.1}, {"id": "doc-2", "distance": 0.2}]


def test_only_ids_and_distances_are_written_never_vectors_or_metadata(tmp_path):
    path = tmp_path / "m.jsonl"
    s = sample()
    with_metadata = MismatchSample(
        **{**s.__dict__, "legacy": (Hit("doc-1", 0.1, {"title": "secret"}),), "target": ()}
    )
    MismatchLog(path).record(with_metadata)
    (line,) = path.read_text().splitlines()
    data = json.loads(line)
    assert data["legacy"] == [{"id": "doc-1", "distance": 0.1}]
    assert "secret" not in line
    assert set(data) == {
        "timestamp",
        "collection",
        "query_id",
        "routing_key_hash",
        "served_store",
        "k",
        "recall",
        "rank_agreement",
        "max_distance_delta",
        "reasons",
        "legacy",
        "target",
    }


def test_latest_is_newest_first_and_limited(tmp_path):
    log = MismatchLog(tmp_path / "m.jsonl")
    for i in range(5):
        log.record(sample(f"q{i}"))
    assert [s.query_id for s in log.latest(3)] == ["q4", "q3", "q2"]


def test_nothing_recorded_reads_as_empty_and_creates_nothing(tmp_path):
    path = tmp_path / "sub" / "m.jsonl"
    assert MismatchLog(path).latest(10) == []
    assert not path.parent.exists()


def test_the_file_is_created_with_its_directory_on_the_first_sample(tmp_path):
    path = tmp_path / ".dualvec" / "m.jsonl"
    MismatchLog(path).record(sample())
    assert path.exists()


def test_the_file_keeps_the_last_max_samples(tmp_path):
    # max 10: trimmed back to 10 once it passes 10 + 10 // 10 = 11 lines.
    path = tmp_path / "m.jsonl"
    log = MismatchLog(path, max_samples=10)
    for i in range(11):
        log.record(sample(f"q{i}"))
    assert len(path.read_text().splitlines()) == 11  # not yet past the slack
    log.record(sample("q11"))
    lines = path.read_text().splitlines()
    assert len(lines) == 10
    assert [json.loads(line)["query_id"] for line in lines] == [f"q{i}" for i in range(2, 12)]
    for i in range(12, 40):
        log.record(sample(f"q{i}"))
    kept = [s.query_id for s in log.latest(100)]
    assert 10 <= len(kept) <= 11
    assert kept == [f"q{i}" for i in range(39, 39 - len(kept), -1)]


def test_a_lost_count_is_recovered_from_the_file(tmp_path):
    path = tmp_path / "m.jsonl"
    log = MismatchLog(path, max_samples=3)
    for i in range(3):
        log.record(sample(f"q{i}"))
    (tmp_path / "m.jsonl.lock").write_text("")  # as if the lock file were new
    # q3 finds no count, counts the file's 4 lines, more than 3 (+ 3 // 10 = 0 slack): trimmed.
    log.record(sample("q3"))
    assert [s.query_id for s in log.latest(10)] == ["q3", "q2", "q1"]


def test_a_torn_line_is_skipped_by_readers(tmp_path):
    path = tmp_path / "m.jsonl"
    log = MismatchLog(path)
    log.record(sample("q0"))
    with path.open("a") as f:
        f.write('{"timestamp": "2026-')  # an append caught half way
    assert [s.query_id for s in log.latest(10)] == ["q0"]


def test_max_samples_must_be_positive(tmp_path):
    with pytest.raises(ConfigError):
        MismatchLog(tmp_path / "m.jsonl", max_samples=0)


def test_threads_appending_at_once_lose_no_line(tmp_path):
    log = MismatchLog(tmp_path / "m.jsonl", max_samples=1000)

    def append(worker: int) -> None:
        for i in range(25):
            log.record(sample(f"t{worker}-{i}"))

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({s.query_id for s in log.latest(1000)}) == 200


def _append_from_process(path: str, worker: int) -> None:
    log = MismatchLog(path, max_samples=50)
    for i in range(40):
        log.record(sample(f"p{worker}-{i}"))


def test_processes_appending_and_trimming_keep_whole_lines_and_the_bound(tmp_path):
    # 4 processes x 40 samples into a log of 50: every surviving line parses, none is lost
    # to a torn write, and the file stays within 50 + 5.
    path = tmp_path / "m.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_from_process, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    lines = path.read_text().splitlines()
    assert 50 <= len(lines) <= 55
    assert all(json.loads(line)["k"] == 2 for line in lines)
    assert len({json.loads(line)["query_id"] for line in lines}) == len(lines)


# the `dualvec mismatches` command


def test_cli_prints_both_answers_side_by_side(tmp_path):
    path = tmp_path / "m.jsonl"
    MismatchLog(path).record(sample("q-old"))
    MismatchLog(path).record(sample("q-new"))
    result = CliRunner().invoke(mismatches, ["--path", str(path), "--limit", "1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "q-new" in out
    assert "q-old" not in out
    assert "recall 0.500 below 1.0" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert rows == [
        ["1", "doc-1", "0.100000", "doc-1", "0.100000"],
        ["2", "doc-2", "0.200000", "doc-9", "0.250000"],
    ]


def test_cli_json_is_a_list_of_samples_newest_first(tmp_path):
    path = tmp_path / "m.jsonl"
    for i in range(3):
        MismatchLog(path).record(sample(f"q{i}"))
    result = CliRunner().invoke(mismatches, ["--path", str(path), "--json", "--limit", "2"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [d["query_id"] for d in data] == ["q2", "q1"]
    assert data[0]["target"][1] == {"id": "doc-9", "distance": 0.25}


def test_cli_without_a_log_says_so_on_stderr_and_exits_0(tmp_path):
    result = CliRunner().invoke(mismatches, ["--path", str(tmp_path / "none.jsonl"), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert "no mismatch recorded" in result.stderr


def test_cli_defaults_to_the_configured_log(tmp_path, monkeypatch):
    path = tmp_path / "configured.jsonl"
    MismatchLog(path).record(sample("from-settings"))
    monkeypatch.setenv("DUALVEC_SHADOW__MISMATCH_LOG", str(path))
    result = CliRunner().invoke(mismatches, ["--json"])
    assert result.exit_code == 0, result.output
    assert [d["query_id"] for d in json.loads(result.stdout)] == ["from-settings"]


def test_samples_name_their_collection_and_can_be_shown_for_one(tmp_path):
    from click.testing import CliRunner

    from dualvec.cli.main import cli

    path = tmp_path / "m.jsonl"
    log = MismatchLog(path)
    for i, collection in enumerate(["claims", "docs", "claims", None]):
        log.record(MismatchSample(**{**sample().__dict__, "query_id": f"q{i}", "collection": collection}))
    result = CliRunner().invoke(cli, ["mismatches", "--path", str(path), "--collection", "claims", "--json"])
    assert result.exit_code == 0, result.output
    assert [(d["query_id"], d["collection"]) for d in json.loads(result.stdout)] == [
        ("q2", "claims"),
        ("q0", "claims"),
    ]
