"""The deployment this tool is built for: six collections in three files, migrated from the
command line one collection at a time while an application writes to all six."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from dualvec import Migration, Record, load_settings, open_store
from dualvec.cli.main import cli

NAMES = ("sessions", "principles", "learnings", "chunks", "claims", "doc_summaries")
DIM = 8


def config(tmp_path) -> str:
    tables = []
    for i, name in enumerate(NAMES):
        tables.append(
            f'[collections.{name}]\ndim = {DIM}\nmodel = "m"\nmetric = "l2"\n'
            f'legacy_url = "sqlite-blob://{tmp_path}/legacy-{i % 3}.db"\n'
            f'target_url = "sqlite-vec://{tmp_path}/target-{i % 3}.db"\n'
            'fields = { kind = "str" }\n'
        )
    return (
        f'flag_file = "{tmp_path}/flags.json"\noutbox_path = "{tmp_path}/outbox.db"\n'
        "flag_poll_seconds = 0.1\nreplay_interval_seconds = 0.5\n\n" + "\n".join(tables)
    )


def batch(name: str, step: int, n: int = 10) -> list[Record]:
    vectors = np.random.default_rng(step).standard_normal((n, DIM)).astype(np.float32)
    return [Record(f"{name}-{(step * 7 + i) % 300}", vectors[i], {"kind": name}) for i in range(n)]


class App:
    """The application: writes to every collection through one Migration until stopped."""

    def __init__(self) -> None:
        self.migration = Migration.from_settings(load_settings())
        self.stop = threading.Event()
        self.errors: list[Exception] = []
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        step = 0
        while not self.stop.wait(0.01):
            step += 1
            name = NAMES[step % len(NAMES)]
            try:
                self.migration[name].upsert(batch(name, step))
                if step % 5 == 0:
                    self.migration[name].delete([f"{name}-{step % 300}"])
                self.migration[name].search(np.ones(DIM, np.float32), k=3, filter={"kind": name})
            except Exception as exc:
                self.errors.append(exc)


@pytest.mark.slow
def test_six_collections_in_three_files_migrate_one_at_a_time_from_the_cli(tmp_path, monkeypatch):
    path = tmp_path / "dualvec.toml"
    path.write_text(config(tmp_path))
    monkeypatch.setenv("DUALVEC_CONFIG", str(path))
    settings = load_settings()
    for name in NAMES:  # what each collection held before dualvec
        legacy_url, _ = settings.urls(name)
        with open_store(legacy_url, settings.specs(name)[0]) as legacy:
            vectors = np.random.default_rng(7).standard_normal((200, DIM)).astype(np.float32)
            legacy.upsert([Record(f"{name}-{i}", vectors[i], {"kind": name}) for i in range(200)])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    app = App()
    app.thread.start()
    try:
        for done, name in enumerate(NAMES):
            for step in (
                ["flags", "set", "--collection", name, "phase=dual", "shadow_percent=100"],
                ["backfill", "--collection", name, "--silent"],
                ["verify", "--collection", name, "--silent"],
                ["flags", "set", "--collection", name, "read_percent=10"],
                ["flags", "set", "--collection", name, "read_percent=100"],
                ["flags", "set", "--collection", name, "phase=target-primary"],
                ["flags", "set", "--collection", name, "phase=target", "shadow_percent=0"],
            ):
                run(*step)
            status = json.loads(run("status", "--json"))["collections"]
            phases = [status[n]["phase"] for n in NAMES]
            assert phases == ["target"] * (done + 1) + ["legacy"] * (len(NAMES) - done - 1)
    finally:
        app.stop.set()
        app.thread.join()
        app.migration.close()
    assert app.errors == []
    for name in NAMES:
        # Every collection is served by its target now, which holds what the app wrote.
        legacy_url, target_url = settings.urls(name)
        with open_store(target_url, settings.specs(name)[1]) as target:
            assert target.count() >= 200
            assert {h.metadata["kind"] for h in target.search(np.ones(DIM, np.float32), k=5)} == {name}
