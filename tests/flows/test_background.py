"""The build's background checks (flows/background.py): another process, step order, failures
that stop the build and set the failed step's checkpoint aside."""

import math
import os

import pytest

from flows.background import active, background
from flows.errors import ToolchainError


def _fail_on_exception(result):
    if isinstance(result, BaseException):
        raise ToolchainError(f"check failed: {result}")


def test_checks_run_in_another_process_and_settle_in_step_order(tmp_path):
    seen = []
    with background(tmp_path) as work:
        assert active() is work
        work.submit("a", os.getpid, on_done=seen.append)
        work.when_checked("a", lambda: seen.append("a passed"), lambda: seen.append("a failed"))
        work.submit("b", os.getpid, on_done=seen.append)
        work.settle(except_step="b")  # what run_flow does once step b has run
        assert len(seen) == 2 and seen[1] == "a passed"
        assert isinstance(seen[0], int) and seen[0] != os.getpid()
    assert active() is None
    assert len(seen) == 3 and seen[2] == seen[0]  # b's check, collected on leaving


def test_a_failed_check_raises_and_sets_its_step_aside(tmp_path):
    seen = []
    with pytest.raises(ToolchainError, match="check failed: math domain error"):
        with background(tmp_path) as work:
            work.submit("a", math.sqrt, -1.0, on_done=_fail_on_exception)
            work.when_checked("a", lambda: seen.append("a passed"),
                              lambda: seen.append("a failed"))
            work.submit("b", math.sqrt, 4.0, on_done=seen.append)
            work.settle(except_step="b")
            seen.append("not reached")
    assert seen == ["a failed"]


def test_a_failed_check_outranks_a_later_error(tmp_path):
    """A step that crashes after an earlier step's check failed reports the earlier failure
    (it happened first), with the crash chained."""
    with pytest.raises(ToolchainError, match="check failed") as caught:
        with background(tmp_path) as work:
            work.submit("a", math.sqrt, -1.0, on_done=_fail_on_exception)
            raise RuntimeError("the next step crashed")
    assert isinstance(caught.value.__context__, RuntimeError)


def test_a_report_is_collected_by_the_end_not_before_the_next_step(tmp_path):
    import time

    seen = []
    with background(tmp_path) as work:
        work.submit("cost", time.sleep, 0.3, on_done=lambda _: seen.append("report"),
                    before_next_step=False)
        work.submit("a", os.getpid, on_done=lambda _: seen.append("a checked"))
        work.settle(except_step="b")  # after step b: a's check, not yet the report
        assert seen == ["a checked"]
    assert seen == ["a checked", "report"]


def test_the_worker_is_stopped_on_leaving(tmp_path):
    """No worker outlives the build (nor keeps the interpreter waiting at exit)."""
    import multiprocessing
    import time

    pids = []
    with background(tmp_path) as work:
        work.submit("a", os.getpid, on_done=pids.append)
    assert pids and pids[0] != os.getpid()
    deadline = time.monotonic() + 5
    while any(p.pid == pids[0] for p in multiprocessing.active_children()):
        assert time.monotonic() < deadline, "the background worker is still running"
        time.sleep(0.05)


def test_a_prestarted_worker_is_taken_by_the_build_or_stopped(tmp_path):
    """build.main starts the worker before its imports; the build takes it, and a build that
    fails before it starts does not leave it running."""
    import multiprocessing
    import time

    from flows import background as bg

    bg.prestart()
    prestarted = bg._PRESTARTED
    assert prestarted is not None
    with bg.background(tmp_path) as work:
        assert work._pool is prestarted and bg._PRESTARTED is None
    bg.prestart()
    bg.discard_prestarted()
    assert bg._PRESTARTED is None
    deadline = time.monotonic() + 5
    while multiprocessing.active_children():
        assert time.monotonic() < deadline, "a prestarted worker is still running"
        time.sleep(0.05)


def test_build_main_leaves_no_worker_behind_on_bad_arguments(capsys):
    import multiprocessing
    import time

    import build

    with pytest.raises(SystemExit):
        build.main(["--model", "no-such-model", "--board", "pynq-z2"])
    capsys.readouterr()
    from flows import background as bg

    assert bg._PRESTARTED is None
    deadline = time.monotonic() + 5
    while any(child.is_alive() for child in multiprocessing.active_children()):
        assert time.monotonic() < deadline, "build.main left its worker running"
        time.sleep(0.05)


def test_work_goes_on_in_this_process_when_the_worker_is_lost(tmp_path, capsys):
    """A worker killed mid-build (out of memory, say): what was queued and what comes after
    runs in the build's own process, with a note, and the results arrive as before."""
    import time

    results = []
    with background(tmp_path) as work:
        work.submit("a", os.getpid, on_done=results.append)
        work.settle()
        assert results[0] != os.getpid()
        for process in list(work._pool._processes.values()):
            process.kill()
        time.sleep(0.5)
        work.submit("b", os.getpid, on_done=results.append)
        work.submit("c", math.sqrt, 9.0, on_done=results.append)
        work.settle()
    assert results[1:] == [os.getpid(), 3.0]
    assert "background process for the checks was lost" in capsys.readouterr().err
