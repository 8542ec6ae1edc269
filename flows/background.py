"""Checks that run beside the build: a step's verification executes in a second process while
the next step transforms the graph; so does the cost report.

Executing a stage on the verification frames takes as long as transforming it; the two are
independent once the stage's graph exists, so `run_flow` opens a `Background` for the build and
`hw_steps._verify` hands it each stage (serialized) instead of waiting. Order and strictness are
those of a sequential build: the checks run one after the other in step order, every check of
step k has passed before step k+1's checkpoint is written, and the build ends only when all of
them have passed. A failed check stops the build with its own message (the step and the first
diverging node). A step's checkpoint is written under a staging name and takes its own name
(and its line in `report/steps.json`) once its checks have passed; after a failed check it is
left as `NN_<step>.failed-verification.onnx` (the model is also in `report/mismatch/<step>/`),
so `--from` never resumes from an unverified graph.

Without an open `Background` (a step function called on its own) checks run in place.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

_ACTIVE: "Background | None" = None


def active() -> "Background | None":
    """The build's open Background, if any."""
    return _ACTIVE


def _warm_up(env: dict[str, str]) -> None:
    """Import finn-plus and the project's stages in the worker while the build starts."""
    os.environ.update(env)
    import hw.finn_flow  # noqa: F401  (also installs the qonnx fixes)
    import hw.frame_exec  # noqa: F401


def _configure(finn_dir: str) -> None:
    from hw.finn_env import configure_finn

    configure_finn(Path(finn_dir))


def _worker_env() -> dict[str, str]:
    """The environment the background work must share with the build."""
    # the build executes graphs without rounding tensors to their datatypes (hw_steps._finn)
    return {"SANITIZE_QUANT_TENSORS": os.environ.get("SANITIZE_QUANT_TENSORS", "0")}


def _new_pool() -> ProcessPoolExecutor:
    # spawn: a fresh interpreter; forking a process that holds torch and onnxruntime
    # threads is not safe
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(_warm_up, _worker_env())
    return pool


_PRESTARTED: ProcessPoolExecutor | None = None


def prestart() -> None:
    """Start the worker now, for the build that follows in this process: it imports finn-plus
    while the build imports torch and the model zoo (the first two seconds of every build)."""
    global _PRESTARTED
    if _PRESTARTED is None:
        _PRESTARTED = _new_pool()


def discard_prestarted() -> None:
    """Stop a worker that `prestart` started and no build took (the build failed early)."""
    global _PRESTARTED
    if _PRESTARTED is not None:
        _terminate(_PRESTARTED)
        _PRESTARTED = None


def _terminate(pool: ProcessPoolExecutor) -> None:
    # (shutdown forgets the processes: take them first)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(1.0)
        if process.is_alive():  # SIGTERM did not end it (caught in its start-up): SIGKILL
            process.kill()
            process.join()
    pool.shutdown(wait=True)


def _run_here(func: Callable, args: tuple):
    """`func(*args)` in this process, its exception as the result (as a future gives it)."""
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001  (handed to on_done like a worker's)
        return exc


@dataclass
class _Pending:
    step: str
    future: Future | None  # None: a callback to run once the step's checks have passed
    on_done: Callable[[object], None]
    on_failure: Callable[[], None] | None = None
    before_next_step: bool = True  # False: a report, collected by the end of the build
    job: tuple = ()  # (func, *args): run here instead if the worker process is lost


@dataclass
class Background:
    """One worker process, running what is submitted in submission order; the checks must
    pass before the next step's checkpoint, a report (the cost analysis) by the end of the
    build. (A second worker measured no faster on two cores: the build itself needs one.)

    If the worker process is lost (killed, out of memory, or it could not start: a script
    that calls `build.main` without an `if __name__ == "__main__":` guard cannot spawn one),
    the work runs in the build's own process instead, with a note; the build goes on."""

    finn_dir: Path
    _pool: ProcessPoolExecutor | None = None
    _pending: list[_Pending] = field(default_factory=list)

    def start(self) -> None:
        global _PRESTARTED
        self._pool, _PRESTARTED = _PRESTARTED or _new_pool(), None
        try:
            self._pool.submit(_configure, str(self.finn_dir))
        except BrokenExecutor:
            self._lost()

    def submit(self, step: str, func: Callable, *args, on_done: Callable[[object], None],
               before_next_step: bool = True) -> None:
        """Run `func(*args)` in a worker; `on_done(result)` runs here when the result is
        collected (it may raise to fail the build): before the next step's checkpoint, or, for
        a report (`before_next_step=False`), by the end of the build."""
        future = None
        if self._pool is not None:
            try:
                future = self._pool.submit(func, *args)
            except BrokenExecutor:
                self._lost()
        if future is None:
            future = Future()
            future.set_result(_run_here(func, args))
        self._pending.append(_Pending(step, future, on_done, before_next_step=before_next_step,
                                      job=(func, *args)))

    def _lost(self) -> None:
        from flows.runner import console

        console.print("[bold yellow]note:[/bold yellow] the background process for the checks "
                      "was lost; they run in this process from here on (slower, same checks).",
                      highlight=False)
        pool, self._pool = self._pool, None
        if pool is not None:
            _terminate(pool)

    def when_checked(self, step: str, on_pass: Callable[[], None],
                     on_failure: Callable[[], None]) -> None:
        """`on_pass()` once the checks `step` has queued so far have passed, `on_failure()` if
        one of them fails."""
        self._pending.append(_Pending(step, None, lambda _: on_pass(), on_failure))

    def settle(self, *, except_step: str | None = None) -> None:
        """Wait for every queued check (except those of `except_step`), in order, and apply
        their results; the first failure is raised."""
        keep = []
        for pending in self._pending:
            if except_step is not None and (pending.step == except_step
                                            or not pending.before_next_step):
                keep.append(pending)
                continue
            result = None
            if pending.future is not None:
                try:
                    result = pending.future.result()
                except BrokenExecutor:  # the worker process is gone: do the work here
                    if self._pool is not None:
                        self._lost()
                    result = _run_here(pending.job[0], pending.job[1:])
                except Exception as exc:  # noqa: BLE001  (the work itself failed)
                    result = exc
            try:
                pending.on_done(result)
            except BaseException:
                failed = [p for p in self._pending if p.step == pending.step and p.on_failure]
                self._pending = []
                for p in failed:
                    p.on_failure()
                raise
        self._pending = keep

    def close(self) -> None:
        """Stop the workers. Called once everything is settled (or the build is abandoned):
        they are terminated rather than left to wind their interpreters down (half a second
        of torch and finn-plus finalization, at the end of every build)."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        _terminate(pool)


@contextmanager
def background(finn_dir: Path) -> Iterator[Background]:
    """Open a Background for one build; on leaving, every queued check is settled (a failed
    check outranks an error raised later in the build: it happened first)."""
    global _ACTIVE
    work = Background(Path(finn_dir))
    work.start()
    _ACTIVE = work
    try:
        try:
            yield work
        except BaseException as exc:
            if isinstance(exc, Exception):
                work.settle()  # raises the earlier step's failure, if there is one
            raise
        work.settle()
    finally:
        _ACTIVE = None
        work.close()
