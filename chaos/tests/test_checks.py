"""The judge's own tests: each check fires on logs that break its rule, and
stays quiet on the logs of a run that was killed and resumed correctly.

The logs are written by hand in the format of chaos/app.py: one worker
process per file, lines in the order the process wrote them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.app import LOOP, LOOP_PHASE
from chaos.checks import Facts, Stop, Verdict, judge, read_logs
from outlast import JSON, RunRecord, RunStatus

RUN = "loop-0001"
INPUT: JSON = {"run": RUN, "steps": [3]}
LEASE = 2.0


class Worker:
    """The lines one worker process logs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lines: list[dict[str, JSON]] = []

    def event(self, kind: str, t: float, epoch: int, error: str | None = None) -> Worker:
        self.lines.append(
            {
                "type": "event",
                "kind": kind,
                "run": RUN,
                "epoch": epoch,
                "duration": 0.01,
                "error": error,
                "pid": self.pid,
                "t": t,
            }
        )
        return self

    def call(self, step: int, t: float) -> Worker:
        line: dict[str, JSON] = {"type": "call", "run": RUN, "phase": LOOP_PHASE, "step": step}
        self.lines.append({**line, "pid": self.pid, "t": t})
        return self

    def write(self, directory: Path) -> None:
        text = "".join(json.dumps(line) + "\n" for line in self.lines)
        (directory / f"worker-{self.pid}-test.jsonl").write_text(text)


def record(
    status: RunStatus = RunStatus.COMPLETED, epoch: int = 2, result: JSON = "out"
) -> RunRecord:
    return RunRecord(
        run_id=RUN,
        namespace="chaos",
        kind=LOOP,
        input=INPUT,
        status=status,
        epoch=epoch,
        attempts=epoch,
        owner="",
        lease=LEASE,
        lease_expires_at=None,
        created_at=0.0,
        updated_at=0.0,
        result=result if status is RunStatus.COMPLETED else None,
        error="Boom: it broke" if status is RunStatus.FAILED else None,
    )


def killed_and_resumed() -> tuple[Worker, Worker]:
    """Worker 100 claims, finishes step 0, is killed during step 1; worker 200
    claims once the lease expired, runs step 1 again (it was in flight) and 2."""
    first = Worker(100).event("claim", 1.0, 1).call(0, 1.1).event("save", 1.15, 1).call(1, 1.2)
    second = Worker(200).event("claim", 3.5, 2).call(1, 3.6).event("save", 3.65, 2).call(2, 3.7)
    second.event("save", 3.75, 2).event("complete", 3.8, 2)
    return first, second


KILL = Stop("kill", 100, 1.25, -9)
FINAL = Stop("term", 200, 4.0, 0, final=True)


def judged(
    tmp_path: Path,
    *workers: Worker,
    records: dict[str, RunRecord] | None = None,
    stops: tuple[Stop, ...] = (KILL, FINAL),
) -> Verdict:
    for worker in workers:
        worker.write(tmp_path)
    facts = Facts(
        submitted={RUN: INPUT},
        expected={RUN: "out"},
        records={RUN: record()} if records is None else records,
        stops=list(stops),
        lease=LEASE,
    )
    return judge(facts, read_logs(tmp_path))


def test_a_killed_run_resumed_correctly_passes(tmp_path: Path) -> None:
    verdict = judged(tmp_path, *killed_and_resumed())
    assert verdict.ok, dict(verdict.problems)
    assert verdict.counts["repeated in-flight calls"] == 1
    assert verdict.counts["recoveries"] == 1
    assert verdict.kill_to_resume == [pytest.approx(2.25)]


def test_a_finished_step_run_again_fails(tmp_path: Path) -> None:
    first, _ = killed_and_resumed()
    # Epoch 2 starts over, as if epoch 1's save of step 0 had been lost.
    second = Worker(200).event("claim", 3.5, 2).call(0, 3.55).call(1, 3.6).call(2, 3.7)
    second.event("complete", 3.8, 2)
    verdict = judged(tmp_path, first, second)
    assert list(verdict.problems) == ["a finished step ran twice"]


def test_a_call_by_a_superseded_epoch_fails(tmp_path: Path) -> None:
    first, _ = killed_and_resumed()
    first.event("save", 1.25, 1)
    first.call(2, 3.55)  # a stalled worker goes on after worker 200 claimed epoch 2 at 3.5
    second = Worker(200).event("claim", 3.5, 2).call(2, 3.6).event("complete", 3.8, 2)
    verdict = judged(tmp_path, first, second, stops=(FINAL,))
    assert list(verdict.problems) == ["a tool call by a superseded epoch"]


def test_a_claim_of_a_live_lease_fails_unless_released(tmp_path: Path) -> None:
    first = Worker(100).event("claim", 1.0, 1).call(0, 1.1).event("save", 1.15, 1).call(1, 1.2)
    second = Worker(200).event("claim", 2.0, 2).call(1, 2.1).call(2, 2.2).event("complete", 2.3, 2)
    verdict = judged(tmp_path, first, second)
    assert list(verdict.problems) == ["a claim took a live lease"]

    first.event("release", 1.3, 1)
    verdict = judged(tmp_path, first, second, stops=(Stop("term", 100, 1.25, 0), FINAL))
    assert verdict.ok, dict(verdict.problems)


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ({}, "lost (submitted, not in the store)"),
        ({RUN: record(RunStatus.FAILED)}, "failed"),
        ({RUN: record(RunStatus.RUNNING)}, "stuck (still running after the drain)"),
        (
            {RUN: record(result="other")},
            "completed with an output an uninterrupted run does not give",
        ),
    ],
)
def test_a_run_that_did_not_complete_as_expected_fails(
    tmp_path: Path, records: dict[str, RunRecord], problem: str
) -> None:
    verdict = judged(tmp_path, *killed_and_resumed(), records=records)
    assert problem in verdict.problems


def test_a_sigtermed_worker_that_did_not_exit_0_fails(tmp_path: Path) -> None:
    verdict = judged(tmp_path, *killed_and_resumed(), stops=(KILL, Stop("term", 200, 4.0, 1)))
    assert list(verdict.problems) == ["a SIGTERMed worker did not exit 0 within its bound"]


def test_a_run_completed_twice_fails(tmp_path: Path) -> None:
    first, second = killed_and_resumed()
    first.event("complete", 1.22, 1)
    verdict = judged(tmp_path, first, second, stops=(FINAL,))
    assert "completed more than once" in verdict.problems


def test_a_completion_without_its_event_needs_a_killed_holder(tmp_path: Path) -> None:
    first, second = killed_and_resumed()
    second.lines.pop()  # the complete event: as if the worker died right after completing
    verdict = judged(tmp_path, first, second)
    assert list(verdict.problems) == ["completed with no complete event of a live worker"]

    verdict = judged(tmp_path, first, second, stops=(KILL, Stop("kill", 200, 3.9, -9)))
    assert verdict.ok, dict(verdict.problems)
    assert verdict.counts["completes unlogged (killed)"] == 1


def test_a_step_never_called_fails(tmp_path: Path) -> None:
    first, second = killed_and_resumed()
    second.lines = [line for line in second.lines if line.get("step") != 2]
    verdict = judged(tmp_path, first, second)
    assert list(verdict.problems) == ["steps never called"]


def test_a_complete_whose_answer_was_lost_counts_once(tmp_path: Path) -> None:
    first, second = killed_and_resumed()
    second.lines[-1]["error"] = "cannot reach Redis (Connection closed by server.)"
    verdict = judged(tmp_path, first, second)
    assert verdict.ok, dict(verdict.problems)
    assert verdict.counts["unacknowledged completes"] == 1
