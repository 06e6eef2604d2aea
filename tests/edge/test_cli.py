"""The command line as a user meets it: help, one-line usage errors before any output, the probe script."""

import subprocess
import sys
import time

import pytest

from skinseg.cli import app
from tests.cli_helpers import ROOT, SAMPLE, invoke, runner


def test_help_keeps_square_brackets_and_shows_flags_without_a_type():
    res = runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    assert "[infer] and [mask] sections" in res.output, res.output
    assert "[ray] extra" in res.output
    assert "<bool>" not in res.output
    for cmd in (["eval", "--help"], ["train", "--help"]):
        out = runner.invoke(app, cmd, env={"COLUMNS": "250"}).output
        assert "[test]" in out or "[train]" in out, out


@pytest.mark.parametrize(("args", "words"), [
    (["--scale", "65536"], "--scale 65536"), (["--tile", "30000"], "--tile 30000x30000"),
    (["--scale", "native", "--overlap", "0.999"], "limit --max-tiles"), (["--max-tiles", "0"], "--max-tiles 0"),
    (["--ray", "127.0.0.1:1"], "no answer within"), (["--ray", "local", "--workers", "-1"], "--workers -1"),
])
def test_unbounded_values_are_one_usage_error_before_any_output(tmp_path, args, words):
    start = time.monotonic()
    res = invoke("infer", str(SAMPLE), "-o", str(tmp_path / "out"), "-q", *args)
    assert res.exit_code == 2 and words in res.output, res.output
    assert not (tmp_path / "out").exists() and time.monotonic() - start < 30


def test_the_probe_script_runs_its_cases():
    """scripts/probe.py: the hostile probe of every command (a handful of its cases here)."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "probe.py"), "--only", "infer --s"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:]
    assert " 0 defects" in res.stdout and "cases" in res.stdout
