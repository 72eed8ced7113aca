"""What ``crownsam run`` shows while a pipeline runs (``crownsam.pipelines.console``).

A tiny pipeline of real components on KFP's real local runner: steps by display name, one line as each
starts and ends, a failed step's own error and log, no retry and no further step after a failure. The
live status line and the verbose echo are checked on the console itself.
"""

# No `from __future__ import annotations`: KFP reads the pipeline annotations below.

import io
import os
import tempfile
import time
from pathlib import Path

import pytest
from kfp import dsl

from crownsam.common.component import fingerprint_op
from crownsam.common.progress import LineProgress, parse_line, progress_bar
from crownsam.pipelines.console import RunConsole, bar, clock, duration
from crownsam.pipelines.local import StepFailed, local_spec, run_pipeline, step_names


@dsl.pipeline(name="console-check")
def two_branches(good: str, missing: str):
    first = fingerprint_op(uri=good).set_display_name("fingerprint good")
    bad = fingerprint_op(uri=missing).set_display_name("fingerprint missing").after(first)
    bad.set_retry(num_retries=2, backoff_duration="60s")  # a cluster setting: no retry locally
    bad.set_cpu_request("1").set_memory_limit("1G")  # cluster settings the local runner would warn about
    with dsl.ParallelFor([1]):  # a loop: the runner then goes on with independent tasks after a failure
        fingerprint_op(uri=good).set_display_name("fingerprint again").after(first)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_failed_step_ends_the_run_with_its_own_error(tmp_path: Path, monkeypatch) -> None:
    temp = tmp_path / "temp"  # the temporary folder of this process and of the tasks, to see what is left
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    good = tmp_path / "good.txt"
    good.write_text("data")
    missing = tmp_path / "nowhere" / "missing.tif"
    stream = io.StringIO()
    console = RunConsole(tmp_path / "run", *step_names(two_branches.pipeline_spec), stream=stream)
    t0 = time.monotonic()
    with console, pytest.raises(StepFailed) as failed:
        run_pipeline(console, two_branches, {"good": str(good), "missing": str(missing)}, tmp_path / "kfp")
    assert time.monotonic() - t0 < 60  # no back-off before a retry
    step = failed.value.step
    assert step.label == "fingerprint missing" and step.bad_input and step.status == "FAILURE"
    assert step.message == f"{missing}: file not found"
    text = str(failed.value)
    assert text.startswith(f"step 'fingerprint missing' failed: {missing}: file not found (its log: ")
    assert str(step.log) in text and str(console.log_path) in text
    assert f"InputError: {missing}: file not found" in step.log.read_text()
    assert "Traceback" in step.log.read_text()  # the traceback stays in the log
    shown = stream.getvalue().splitlines()
    assert sum("fingerprint missing" in ln for ln in shown) == 2  # started once (no retry), failed once
    assert any(ln.split()[1:3] == ["FAILED", "fingerprint"] for ln in shown)
    assert not any("Traceback" in ln or "Executor" in ln for ln in shown)
    labels = [s.label for s in console.steps]
    assert labels[0] == "fingerprint good" and labels[-1] == "fingerprint missing"  # nothing after it
    log = console.log_path.read_text()
    assert "have no effect in the current local runner" not in log and "base image" not in log
    if "fingerprint again 1" not in labels:  # the runner would have started it after the failure
        assert "'fingerprint-op-3' not run: an earlier step failed" in log
    assert not list(temp.iterdir())  # no task's temporary folder is left (KFP left one per task)
    assert os.environ["TMPDIR"] == str(temp)


def test_local_spec_keeps_cluster_settings_out_of_a_local_run() -> None:
    spec = two_branches.pipeline_spec
    local = local_spec(spec)
    bad = "fingerprint-op-2"
    assert spec.root.dag.tasks[bad].retry_policy.max_retry_count == 2
    assert not local.root.dag.tasks[bad].HasField("retry_policy")
    assert local.root.dag.tasks[bad].task_info.name == bad
    assert "resources" in spec.deployment_spec["executors"]["exec-fingerprint-op-2"]["container"]
    assert "resources" not in local.deployment_spec["executors"]["exec-fingerprint-op-2"]["container"]
    labels, loops = step_names(spec)
    assert labels[bad] == "fingerprint missing" and loops == {"fingerprint-op-3"}


def test_status_line_on_a_terminal_and_nothing_extra_elsewhere(tmp_path: Path) -> None:
    term = Terminal()
    console = RunConsole(tmp_path / "t", {"train-op": "train Mask R-CNN (coarse)"}, stream=term)
    with console:
        step = console.begin("train-op")
        print("a line of the task")
        print("crownsam-progress: iterations 3/4")
        assert step.progress == ("iterations", 3, 4)
        console.finish(step, "SUCCESS")
    out = term.getvalue()
    assert "\r\x1b[2K" in out and "[#########---] 3/4 iterations" in out  # redrawn in place
    assert "a line of the task" not in out
    assert "a line of the task" in step.log.read_text() and "crownsam-progress" not in step.log.read_text()
    plain = io.StringIO()  # not a terminal: start and end lines only
    with RunConsole(tmp_path / "p", stream=plain) as c2:
        s = c2.begin("x")
        print("crownsam-progress: windows 1/9")
        c2.finish(s, "SUCCESS")
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "start   x" in lines[0] and "done    x" in lines[1]


def test_verbose_shows_every_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    with RunConsole(tmp_path / "v", verbose=True, stream=stream) as c:
        s = c.begin("x")
        print("\x1b[96mcoloured\x1b[0m output")
        c.finish(s, "SUCCESS")
    assert "coloured output" in stream.getvalue()
    assert "coloured output" in (tmp_path / "v" / "run.log").read_text()
    assert "\x1b[96m" not in (tmp_path / "v" / "run.log").read_text()


def test_progress_lines_for_a_supervisor(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CROWNSAM_PROGRESS", "lines")
    bar_ = progress_bar(range(3), desc="windows", unit="win", enabled=False)
    assert isinstance(bar_, LineProgress)
    assert list(bar_) == [0, 1, 2]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "crownsam-progress: windows 0/3" and lines[-1] == "crownsam-progress: windows 3/3"
    assert [parse_line(ln) for ln in lines][-1] == ("windows", 3, 3)
    assert parse_line("crownsam-progress: windows") is None and parse_line("windows 3/3") is None
    quiet = progress_bar(total=3, desc="x", enabled=False, report=False)  # e.g. not rank 0
    quiet.update(3)
    quiet.close()
    monkeypatch.delenv("CROWNSAM_PROGRESS")
    progress_bar(total=3, desc="x", enabled=False).update(3)
    assert capsys.readouterr().out == ""


def test_words_for_time_and_bars() -> None:
    assert clock(75) == "1:15" and clock(3725) == "1:02:05"
    assert duration(0.44) == "0.4 s" and duration(42) == "42 s" and duration(276) == "4 min 36 s"
    assert bar(0, 4, 4) == "[----]" and bar(2, 4, 4) == "[##--]" and bar(9, 4, 4) == "[####]"
