"""What a chaos scenario must prove, checked from the stored records, the
workers' logs and what the harness did.

Each worker process logs, in order, every tool call it started (run, phase,
step) and every run event (begin, claim, save, complete, fail, release,
lease_lost with the run's epoch); see :mod:`chaos.app`. The epoch a call ran
under is the one of its process's latest begin/claim of that run before it.

The checks (each failure is a problem with examples):

* every submitted run is stored, completed, with the output of an
  uninterrupted run of the same input; none failed, stayed running, or was
  lost; no run appeared that was not submitted;
* completed exactly once: at most one acknowledged ``complete`` per run, at
  the record's epoch; none only when the complete of that epoch reached the
  store but its answer was lost (a server restart), or the worker holding
  that epoch was killed with SIGKILL between completing and logging it;
* every step of every run was called at least once;
* no finished step ran twice: within an epoch, a run's steps start once each
  and in order; of an epoch's calls only the last (the one in flight when the
  worker died or was stopped) may be started again by a later epoch;
* no call by a superseded epoch: when a call of epoch e started, no claim of
  that run with an epoch above e had been made;
* every SIGTERMed worker exited 0 within its bound.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from outlast import JSON, RunRecord, RunStatus

EXAMPLES = 5
"""Examples printed per kind of problem."""

HOLDING = frozenset({"begin", "claim"})
LETTING_GO = frozenset({"complete", "fail", "release"})


@dataclass(frozen=True, slots=True)
class Call:
    process: str
    pid: int
    t: float
    run: str
    phase: str
    step: int


@dataclass(frozen=True, slots=True)
class RunEvent:
    process: str
    pid: int
    t: float
    kind: str
    run: str
    epoch: int
    error: str | None
    duration: float = 0.0

    @property
    def began(self) -> float:
        """When the operation started (``t`` is when it returned)."""
        return self.t - self.duration


@dataclass(frozen=True, slots=True)
class Logs:
    """Every process's lines, in each process's order."""

    by_process: dict[str, list[Call | RunEvent]]

    @property
    def calls(self) -> list[Call]:
        return [e for lines in self.by_process.values() for e in lines if isinstance(e, Call)]

    @property
    def events(self) -> list[RunEvent]:
        return [e for lines in self.by_process.values() for e in lines if isinstance(e, RunEvent)]


def read_logs(directory: Path) -> Logs:
    by_process: dict[str, list[Call | RunEvent]] = {}
    for path in sorted(directory.glob("worker-*.jsonl")):
        lines: list[Call | RunEvent] = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not a JSON line: {line[:200]!r}") from exc
            if data["type"] == "call":
                lines.append(
                    Call(
                        path.name, data["pid"], data["t"], data["run"], data["phase"], data["step"]
                    )
                )
            else:
                lines.append(
                    RunEvent(
                        path.name,
                        data["pid"],
                        data["t"],
                        data["kind"],
                        data["run"],
                        data["epoch"],
                        data["error"],
                        data["duration"],
                    )
                )
        by_process[path.name] = lines
    return Logs(by_process)


@dataclass(frozen=True, slots=True)
class Stop:
    """A signal the harness sent a worker: 'kill' or 'term', when, and its exit."""

    how: str
    pid: int
    t: float
    exit_code: int | None
    final: bool = False
    """The SIGTERM that stops the fleet after the drain (not part of the chaos)."""
    stuck: bool = False
    """It did not exit within its bound and was killed."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the harness knows besides the logs."""

    submitted: dict[str, JSON]
    """run id -> input"""
    expected: dict[str, JSON]
    """run id -> the output of an uninterrupted run"""
    records: dict[str, RunRecord]
    """run id -> the stored record after the drain"""
    stops: list[Stop]
    lease: float
    """The workers' lease, in seconds."""


@dataclass
class Verdict:
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kill_to_resume: list[float] = field(default_factory=list)
    release_to_resume: list[float] = field(default_factory=list)

    def problem(self, what: str, example: str) -> None:
        self.problems[what].append(example)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(facts: Facts, logs: Logs) -> Verdict:
    verdict = Verdict()
    pids = [lines[0].pid for lines in logs.by_process.values() if lines]
    if len(pids) != len(set(pids)):
        verdict.problem("a pid was reused; calls cannot be attributed", str(sorted(pids)))
        return verdict
    _records(facts, verdict)
    attributed = _attribute(logs, verdict)
    _steps(facts, attributed, verdict)
    claims = _claims(logs)
    _superseded(attributed, claims, verdict)
    _live_leases_taken(facts, logs, claims, verdict)
    _completions(facts, logs, verdict)
    _stops(facts, logs, claims, verdict)
    events = logs.events
    for event in events:
        verdict.counts[f"{event.kind} events"] += 1
        if event.error is not None:
            verdict.counts[f"{event.kind} errors"] += 1
        if event.kind == "claim" and event.error is None:
            verdict.counts["recoveries" if event.epoch >= 2 else "first claims"] += 1
    verdict.counts["tool calls"] = len(logs.calls)
    return verdict


def _records(facts: Facts, verdict: Verdict) -> None:
    for run_id in sorted(facts.submitted):
        record = facts.records.get(run_id)
        if record is None:
            verdict.problem("lost (submitted, not in the store)", run_id)
        elif record.status is RunStatus.FAILED:
            verdict.problem("failed", f"{run_id}: {record.error}")
        elif record.status is RunStatus.RUNNING:
            lease = record.lease_expires_at
            verdict.problem(
                "stuck (still running after the drain)",
                f"{run_id} epoch {record.epoch}, owner {record.owner or 'nobody'}, lease "
                f"{'released' if lease is None else f'until {lease:.3f}'}, "
                f"last written {record.updated_at:.3f}",
            )
        elif record.result != facts.expected[run_id]:
            verdict.problem(
                "completed with an output an uninterrupted run does not give",
                f"{run_id}: {record.result!r} != {facts.expected[run_id]!r}",
            )
        else:
            verdict.counts["completed as expected"] += 1
    for run_id in sorted(set(facts.records) - set(facts.submitted)):
        verdict.problem("in the store but never submitted", run_id)


Attributed = dict[tuple[str, int], list[Call]]
"""(run, epoch) -> the calls made under that epoch, in order."""


def _attribute(logs: Logs, verdict: Verdict) -> Attributed:
    attributed: Attributed = defaultdict(list)
    for process, lines in logs.by_process.items():
        holding: dict[str, int] = {}
        for line in lines:
            if isinstance(line, RunEvent):
                if line.kind in HOLDING and line.error is None:
                    holding[line.run] = line.epoch
            elif line.run not in holding:
                verdict.problem("a tool call with no claim before it", f"{process}: {line}")
            else:
                attributed[(line.run, holding[line.run])].append(line)
    return attributed


def _key(call: Call) -> tuple[str, int]:
    return (call.phase, call.step)


def _steps(facts: Facts, attributed: Attributed, verdict: Verdict) -> None:
    by_run: dict[str, list[tuple[int, list[Call]]]] = defaultdict(list)
    for (run, epoch), calls in attributed.items():
        by_run[run].append((epoch, calls))
    for run_id, run_input in facts.submitted.items():
        assert isinstance(run_input, dict) and isinstance(run_input["steps"], list)
        expected = _expected_steps(run_input)
        epochs = sorted(by_run.get(run_id, []), key=lambda pair: pair[0])
        seen = {_key(call) for _, calls in epochs for call in calls}
        missing = [key for key in expected if key not in seen]
        if missing:
            verdict.problem("steps never called", f"{run_id}: {missing}")
        finished_before: dict[tuple[str, int], int] = {}
        for epoch, calls in epochs:
            keys = [_key(call) for call in calls]
            if len(set(keys)) != len(keys):
                verdict.problem("a step started twice in one epoch", f"{run_id} epoch {epoch}")
            order = [expected.index(key) for key in keys if key in expected]
            if order != sorted(order):
                verdict.problem("steps out of order", f"{run_id} epoch {epoch}: {keys}")
            for key in keys:
                if key in finished_before:
                    verdict.problem(
                        "a finished step ran twice",
                        f"{run_id} {key[0]} step {key[1]}: finished under epoch "
                        f"{finished_before[key]}, started again under epoch {epoch}",
                    )
                elif any(key in [_key(c) for c in cs] for e, cs in epochs if e < epoch):
                    verdict.counts["repeated in-flight calls"] += 1
            for key in keys[:-1]:
                finished_before.setdefault(key, epoch)


def _expected_steps(run_input: dict[str, JSON]) -> list[tuple[str, int]]:
    from chaos.app import LOOP_PHASE, PHASES

    steps = run_input["steps"]
    assert isinstance(steps, list)
    phases = PHASES if len(steps) == len(PHASES) else (LOOP_PHASE,)
    return [
        (phase, n)
        for phase, count in zip(phases, steps, strict=True)
        for n in range(int(str(count)))
    ]


Claims = dict[str, list[RunEvent]]
"""run -> its successful claims, by time."""


def _claims(logs: Logs) -> Claims:
    claims: Claims = defaultdict(list)
    for event in logs.events:
        if event.kind == "claim" and event.error is None:
            claims[event.run].append(event)
    for events in claims.values():
        events.sort(key=lambda e: e.t)
    return claims


def _superseded(attributed: Attributed, claims: Claims, verdict: Verdict) -> None:
    for (run, epoch), calls in attributed.items():
        for call in calls:
            newer = [c for c in claims.get(run, ()) if c.epoch > epoch and c.t < call.t]
            if newer:
                verdict.problem(
                    "a tool call by a superseded epoch",
                    f"{run} {call.phase} step {call.step} by pid {call.pid} under epoch {epoch} "
                    f"at {call.t:.3f}, after pid {newer[0].pid} claimed epoch {newer[0].epoch} "
                    f"at {newer[0].t:.3f}",
                )


CLOCK_SLACK = 0.005
"""Seconds of float and clock-reading noise allowed when comparing times."""


def _live_leases_taken(facts: Facts, logs: Logs, claims: Claims, verdict: Verdict) -> None:
    """A claim must not take a live lease. The claim of epoch e leased the run
    until at least (when that claim was asked for) + lease; unless epoch e's
    worker released the run, no claim of e + 1 may come before. (Saves do not
    extend a lease and renewals are not logged: this bound is the claim's.)"""
    leased_from: dict[tuple[str, int], float] = {}
    released: set[tuple[str, int]] = set()
    for event in logs.events:
        if event.error is None and event.kind in HOLDING:
            leased_from[(event.run, event.epoch)] = event.began
        elif event.error is None and event.kind == "release":
            released.add((event.run, event.epoch))
    for run, run_claims in claims.items():
        for claim in run_claims:
            before = (run, claim.epoch - 1)
            if before in released or before not in leased_from:
                continue
            live_until = leased_from[before] + facts.lease
            if claim.t + CLOCK_SLACK < live_until:
                verdict.problem(
                    "a claim took a live lease",
                    f"{run} epoch {claim.epoch} claimed by pid {claim.pid} at {claim.t:.3f}; "
                    f"epoch {before[1]} was claimed from {leased_from[before]:.3f}, so its "
                    f"lease lasted until at least {live_until:.3f}",
                )


def _completions(facts: Facts, logs: Logs, verdict: Verdict) -> None:
    """At most one acknowledged complete per run, at the stored epoch. A
    completed run with none: either the complete reached the store and its
    answer was lost (the worker logged it as failed), or the worker holding
    that epoch was killed between the complete and its log line."""
    acknowledged: dict[str, list[RunEvent]] = defaultdict(list)
    unanswered: set[tuple[str, int]] = set()
    holder: dict[tuple[str, int], int] = {}
    for event in logs.events:
        if event.kind == "complete":
            if event.error is None:
                acknowledged[event.run].append(event)
            else:
                unanswered.add((event.run, event.epoch))
        if event.kind in HOLDING and event.error is None:
            holder[(event.run, event.epoch)] = event.pid
    killed = {stop.pid for stop in facts.stops if stop.how == "kill"}
    for run_id, record in facts.records.items():
        if record.status is not RunStatus.COMPLETED:
            continue
        done = acknowledged.get(run_id, [])
        if len(done) > 1:
            verdict.problem(
                "completed more than once", f"{run_id}: epochs {[e.epoch for e in done]}"
            )
        elif done and done[0].epoch != record.epoch:
            verdict.problem(
                "completed under another epoch than stored",
                f"{run_id}: event epoch {done[0].epoch}, record epoch {record.epoch}",
            )
        elif done:
            continue
        elif (run_id, record.epoch) in unanswered:
            verdict.counts["unacknowledged completes"] += 1
        elif holder.get((run_id, record.epoch)) in killed:
            verdict.counts["completes unlogged (killed)"] += 1
        else:
            verdict.problem("completed with no complete event of a live worker", run_id)


def _stops(facts: Facts, logs: Logs, claims: Claims, verdict: Verdict) -> None:
    lines_of = {lines[0].pid: lines for lines in logs.by_process.values() if lines}
    for stop in facts.stops:
        verdict.counts[f"{'final ' if stop.final else ''}{stop.how} signals"] += 1
        if stop.how == "term" and (stop.stuck or stop.exit_code != 0):
            verdict.problem(
                "a SIGTERMed worker did not exit 0 within its bound",
                f"pid {stop.pid}: exit {stop.exit_code}{' (killed: stuck)' if stop.stuck else ''}",
            )
        lines = lines_of.get(stop.pid, [])
        if stop.how == "kill":
            for run, epoch in _held(lines).items():
                later = [c for c in claims.get(run, ()) if c.t > stop.t and c.epoch > epoch]
                record = facts.records.get(run)
                if later:
                    verdict.kill_to_resume.append(later[0].t - stop.t)
                elif record and record.status is RunStatus.COMPLETED and record.epoch == epoch:
                    verdict.counts["held at a kill, completed just before it"] += 1
                else:
                    verdict.problem(
                        "held by a killed worker and never claimed again",
                        f"{run} epoch {epoch} held by pid {stop.pid}",
                    )
        else:
            for event in lines:
                if isinstance(event, RunEvent) and event.kind == "release" and not event.error:
                    later = [c for c in claims.get(event.run, ()) if c.t > event.t]
                    if later:
                        verdict.release_to_resume.append(later[0].t - event.t)


def _held(lines: Iterable[Call | RunEvent]) -> dict[str, int]:
    """Runs a process held when it ended: run -> epoch."""
    held: dict[str, int] = {}
    for line in lines:
        if not isinstance(line, RunEvent):
            continue
        if line.kind in HOLDING and line.error is None:
            held[line.run] = line.epoch
        elif (line.kind in LETTING_GO and line.error is None) or line.kind == "lease_lost":
            held.pop(line.run, None)
    return held


def spread(seconds: list[float]) -> str:
    """``n, p50 X s, max Y s`` of a list of delays."""
    if not seconds:
        return "none"
    return f"{len(seconds)} runs, p50 {statistics.median(seconds):.2f}s, max {max(seconds):.2f}s"
