from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import structlog

from dualvec.errors import ConfigError
from dualvec.logs import configure_logging


@pytest.fixture(autouse=True)
def reset_structlog():
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_on_stderr_with_bound_context(capsys):
    configure_logging(json=True)
    log = structlog.get_logger("dualvec.test")
    with structlog.contextvars.bound_contextvars(collection="docs", request_id="r-42"):
        log.info("searched", k=10)
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for data
    event = json.loads(captured.err)
    assert event["event"] == "searched"
    assert event["level"] == "info"
    assert (event["collection"], event["request_id"], event["k"]) == ("docs", "r-42", 10)
    assert event["timestamp"].endswith("Z")


def test_exceptions_become_structured_tracebacks(capsys):
    configure_logging(json=True)
    try:
        raise ValueError("bad")
    except ValueError:
        structlog.get_logger().exception("failed")
    event = json.loads(capsys.readouterr().err)
    assert event["exception"][0]["exc_type"] == "ValueError"


def test_level_filters_lower_events(capsys):
    configure_logging(json=True, level="warning")
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["loud"]


def test_a_logger_fetched_before_configuration_follows_it(capsys):
    log = structlog.get_logger("dualvec.early")  # as modules do at import time
    configure_logging(json=True)
    log.info("late")
    assert json.loads(capsys.readouterr().err)["event"] == "late"


def test_auto_picks_json_when_stderr_is_not_a_terminal(capsys):
    configure_logging()  # pytest's captured stderr is no terminal
    structlog.get_logger().info("piped")
    assert json.loads(capsys.readouterr().err)["event"] == "piped"


def test_auto_picks_the_console_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging()
    structlog.get_logger().info("hello", who="operator")
    text = terminal.getvalue()
    assert "hello" in text
    assert "who" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_console_can_be_forced(capsys):
    configure_logging(json=False)
    structlog.get_logger().info("forced")
    err = capsys.readouterr().err
    assert "forced" in err
    assert not err.lstrip().startswith("{")


def test_unknown_level_is_refused():
    with pytest.raises(ConfigError, match="unknown log level"):
        configure_logging(level="chatty")


def test_importing_dualvec_configures_no_logging():
    code = (
        "import structlog, logging\n"
        "import dualvec, dualvec.logs, dualvec.metrics, dualvec.shadow, dualvec.mismatch_log\n"
        "import dualvec.cli.mismatches\n"
        "assert not structlog.is_configured()\n"
        "assert not logging.getLogger().handlers\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


QUIET_APP = """
import json, pathlib, sys
from dualvec import Router, Settings, open_store
from dualvec.testing import make_records, sample_spec

data = pathlib.Path(sys.argv[1])
spec = sample_spec(dim=4)
router = Router.over(
    open_store("memory://", spec),
    open_store("memory://", spec),
    Settings(flag_file=data / "flags.json", outbox_path=data / "outbox.db", flag_poll_seconds=0.05),
)
(data / "flags.json").write_text(json.dumps({"phase": "dual", "shadow_percent": 100}))
import time; time.sleep(0.3)  # the watcher logs flags_changed; shadows log their comparisons
router.upsert(make_records(5, 4))
router.search(make_records(1, 4, seed=9)[0].vector, k=3)
(data / "flags.json").write_text("{ not json")  # logged as an error, at the library's level
time.sleep(0.3)
router.close()
"""


def test_the_library_prints_nothing_until_the_app_configures_logging(tmp_path):
    """An unconfigured app gets structlog's defaults, which print to stdout: a CLI app's output
    would carry dualvec's events. dualvec's own loggers stay silent until configured."""
    child = subprocess.run(
        [sys.executable, "-c", QUIET_APP, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert (child.stdout, child.stderr) == ("", "")
