"""`dualvec ramp --prometheus URL`: the fleet's numbers, as a real Prometheus scraping a real
`dualvec serve` sums them. Two ramps at once over the deployment's flag file, judged only
through PromQL: the healthy collection reaches 100, the divergent one is rolled back."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import Prometheus, free_port, prometheus_scraping
from service_process import dualvec_command, service_env, start_service
from test_ramp_service import RECORDS, RELAXED, delete_behind_the_back, flags, prepare, traffic

from dualvec.flags import FlagFile, FlagOverrides, write_flag_file

pytestmark = pytest.mark.slow

JOB = "app"
INTERVAL = "4s"  # four scrapes a window, as for any rate()


def ramp_process(collection: str, steps: str, prometheus: Prometheus, cwd, env) -> subprocess.Popen:
    """`dualvec ramp --prometheus URL --job app ... --json`, with the deployment's config."""
    return subprocess.Popen(
        [
            dualvec_command(), "ramp", "--collection", collection, "--steps", steps, "--interval", INTERVAL,
            "--prometheus", prometheus.url, "--job", JOB, "--guard", "failure_limit=1", "--json", *RELAXED,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
    )  # fmt: skip


def test_ramps_judged_through_prometheus_complete_or_roll_back(tmp_path):
    env = service_env(tmp_path)
    service = start_service(tmp_path, env)
    try:
        for name in ("docs", "notes"):
            prepare(service, name)
        delete_behind_the_back(tmp_path, "notes", [f"r{i}" for i in range(0, RECORDS, 2)])
        with (
            prometheus_scraping(tmp_path / "prometheus", [f"{service.url}/metrics"], JOB) as prometheus,
            traffic(service, "docs"),
            traffic(service, "notes"),
        ):
            ramps = {
                "docs": ramp_process("docs", "50,100", prometheus, tmp_path, env),
                "notes": ramp_process("notes", "50", prometheus, tmp_path, env),
            }
            done = {name: (proc.communicate(timeout=90), proc.returncode) for name, proc in ramps.items()}
        # The ramps wrote the flag file the service follows.
        assert flags(service, "docs")["read_percent"] == 100
        assert (flags(service, "notes")["read_percent"], flags(service, "notes")["phase"]) == (0, "dual")
    finally:
        assert service.stop() == 0
    ((docs_out, docs_err), docs_code), ((notes_out, notes_err), notes_code) = done["docs"], done["notes"]
    assert docs_code == 0, docs_err
    docs = json.loads(docs_out)
    assert docs["source"] == f"Prometheus at {prometheus.url} (job {JOB})"
    assert [(i["read_percent"], i["verdict"]) for i in docs["intervals"]] == [(50, "pass"), (100, "pass")]
    assert all(i["checks"]["comparisons"]["value"] > 0 for i in docs["intervals"])
    assert notes_code == 4, notes_err
    notes = json.loads(notes_out)
    assert (notes["outcome"], notes["cause"]) == ("rolled_back", "mismatch_ratio")
    assert notes["intervals"][0]["checks"]["mismatch_ratio"]["value"] > 0.01


def test_an_unreachable_prometheus_fails_the_interval(tmp_path):
    env = service_env(tmp_path)
    write_flag_file(
        tmp_path / "flags.json", FlagFile(collections={"docs": FlagOverrides(shadow_percent=100)})
    )
    before = (tmp_path / "flags.json").read_bytes()
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [
            dualvec_command(), "ramp", "--collection", "docs", "--steps", "50", "--interval", "0.2s",
            "--prometheus", nowhere, "--guard", "failure_limit=1", "--dry-run", "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["outcome"], summary["cause"]) == ("rolled_back", "source_error")
    assert "cannot reach" in summary["reason"] and "would roll back" in done.stderr
    assert (tmp_path / "flags.json").read_bytes() == before
