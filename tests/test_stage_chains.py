"""datacurate.run.execute_stages: chains (a training and its evaluation) side by side, in order within a chain."""
from __future__ import annotations

import threading
import time

import pytest

from datacurate.run import Stage, execute_stages


def _recorder():
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    running = {"now": 0, "max": 0}

    def stage(name: str, chain: str | None = None, seconds: float = 0.05, done: bool = False, fail: bool = False,
              meet: threading.Barrier | None = None, after: threading.Event | None = None,
              signal: threading.Event | None = None):
        def run():
            with lock:
                events.append(("start", name))
                running["now"] += 1
                running["max"] = max(running["max"], running["now"])
            if meet is not None:
                meet.wait()                 # broken (an error) unless both parties run at the same time
            if after is not None:
                assert after.wait(10)
            time.sleep(seconds)
            if signal is not None:
                signal.set()
            with lock:
                running["now"] -= 1
                events.append(("end", name))
            if fail:
                raise RuntimeError(f"{name} failed")

        return Stage(name, lambda: done, run, chain=chain)

    return stage, events, running


def _order(events, name, kind="start"):
    return events.index((kind, name))


def test_chains_run_side_by_side_and_in_order_within_a_chain():
    stage, events, running = _recorder()
    meet = threading.Barrier(2, timeout=10)
    stages = [stage("pool"),
              stage("train a", "a", 0.05, meet=meet), stage("eval a", "a"),
              stage("train b", "b", 0.05, meet=meet), stage("eval b", "b"),
              stage("train c", "c", 0.05), stage("eval c", "c"),
              stage("report")]
    times = execute_stages(stages, jobs=2)
    assert set(times) == {s.name for s in stages}
    assert running["max"] == 2                                   # never more than jobs at once
    assert not meet.broken                                       # a and b ran at the same time
    for c in "abc":                                              # each evaluation after its training
        assert _order(events, f"train {c}", "end") < _order(events, f"eval {c}")
    assert _order(events, "pool", "end") < _order(events, "train a")     # unchained stages are barriers
    assert max(_order(events, f"eval {c}", "end") for c in "abc") < _order(events, "report")


def test_one_job_runs_everything_in_order():
    stage, events, running = _recorder()
    stages = [stage("train a", "a"), stage("eval a", "a"), stage("train b", "b"), stage("eval b", "b")]
    execute_stages(stages, jobs=1)
    assert running["max"] == 1
    assert [n for k, n in events if k == "start"] == ["train a", "eval a", "train b", "eval b"]


def test_complete_stages_are_skipped():
    stage, events, _ = _recorder()
    times = execute_stages([stage("train a", "a", done=True), stage("eval a", "a"),
                            stage("train b", "b", done=True), stage("eval b", "b", done=True)], jobs=2)
    assert list(times) == ["eval a"]
    assert [n for k, n in events if k == "start"] == ["eval a"]


def test_a_failing_chain_stops_new_chains_and_its_own_later_stages():
    stage, events, _ = _recorder()
    failing, meet = threading.Event(), threading.Barrier(2, timeout=10)
    stages = [stage("train a", "a", 0.05, fail=True, meet=meet, signal=failing), stage("eval a", "a"),
              stage("train b", "b", 0.5, meet=meet, after=failing), stage("eval b", "b"),
              stage("train c", "c"), stage("eval c", "c"),
              stage("after")]
    with pytest.raises(RuntimeError, match="train a failed"):
        execute_stages(stages, jobs=2)
    started = [n for k, n in events if k == "start"]
    assert "eval a" not in started and "after" not in started
    assert "train c" not in started, events                      # queued when a failed: never started
    assert ("end", "train b") in events                          # the running one was let finish
    assert "eval b" not in started                               # ... but its chain went no further
