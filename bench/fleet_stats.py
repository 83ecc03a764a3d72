"""What the fleet bench measures, from the workers' event files and the stored records.

Every worker process (outlast's and DBOS's) writes lines
``<time.time()> <event> <run id> <epoch> <pid>`` to a file of its own in one
directory (see fleet_app.py, fleet_dbos.py). The bench reads them while the
fleet runs (to count completions) and once it stopped (for the figures).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Line:
    at: float
    event: str
    run_id: str
    epoch: int
    pid: int


class EventFiles:
    """The event files of one directory, read incrementally."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self.lines: list[Line] = []
        self.counts: Counter[str] = Counter()

    def read(self) -> None:
        """Take in what the workers wrote since the last read (whole lines only)."""
        for path in sorted(self.directory.glob("*.log")):
            with path.open("r") as file:
                file.seek(self._offsets.get(path, 0))
                text = self._partial.pop(path, "") + file.read()
                self._offsets[path] = file.tell()
            complete, _, rest = text.rpartition("\n")
            if rest:
                self._partial[path] = rest
            for raw in complete.splitlines():
                at, event, run_id, epoch, pid = raw.split(" ")
                line = Line(float(at), event, run_id, int(epoch), int(pid))
                self.lines.append(line)
                self.counts[event] += 1

    def by_run(self, event: str) -> dict[str, list[Line]]:
        found: dict[str, list[Line]] = defaultdict(list)
        for line in self.lines:
            if line.event == event:
                found[line.run_id].append(line)
        return found


def read_counts(directory: Path) -> Counter[str]:
    """The sum of the outlast workers' call counts (``*.counts``: ``name<TAB>count``)."""
    total: Counter[str] = Counter()
    for path in directory.glob("*.counts"):
        for line in path.read_text().splitlines():
            name, _, count = line.partition("\t")
            total[name] += int(count)
    return total


@dataclass(frozen=True, slots=True)
class Facts:
    """What the store says about one run after the drain."""

    finished: bool
    """Completed with the expected output."""
    claimed_once: bool
    """Its record shows exactly one claim (outlast: epoch 1, attempts 1, no
    crash; DBOS: one dequeue, recovery_attempts 1)."""
    finished_at: float
    """When its completion was written, by the store's clock (POSIX seconds)."""
    started_at: float | None = None
    """When the store marked it claimed, if it records that (DBOS's started_at)."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class Phase:
    """One batch of runs: when each was submitted and what came of it."""

    name: str
    submitted: dict[str, float] = field(default_factory=dict)
    """run id -> time.time() just before the submit call."""
    submit_done: float = 0.0
    """time.time() when the last submit call returned."""


@dataclass
class Result:
    """One target's figures: one row of the table."""

    target: str
    settings: str
    runs: int
    seconds: float
    submit_seconds: float
    claim_ms: tuple[float, float]
    start_ms: tuple[float, float]
    paced_start_ms: tuple[float, float] | None
    paced_claim_ms: tuple[float, float] | None
    problems: list[str]
    per_worker: tuple[int, int]
    per_run: dict[str, float] | None = None
    """PostgreSQL's counters of the target's database, per run (all included)."""
    cpu_ms: dict[str, float] | None = None
    """CPU milliseconds per run: the workers, the bench (submitting), the
    server, and the rest of the machine (other load: noise)."""
    calls: dict[str, float] | None = None
    """outlast workers' claim_next and wait_for_change calls per run."""

    @property
    def rate(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else float("nan")


def latencies(phase: Phase, times: Mapping[str, float | None]) -> tuple[float, float]:
    """p50 and p99 of (time - submit time), in ms, over the phase's runs that have one."""
    values = [
        (at - phase.submitted[run_id]) * 1000
        for run_id, at in times.items()
        if run_id in phase.submitted and at is not None
    ]
    return percentile(values, 0.50), percentile(values, 0.99)


def first_times(lines: Mapping[str, list[Line]]) -> dict[str, float | None]:
    return {run_id: min(line.at for line in found) for run_id, found in lines.items()}


def check(
    phases: Iterable[Phase],
    facts: Mapping[str, Facts],
    claims: Mapping[str, list[Line]] | None,
    starts: Mapping[str, list[Line]],
    counts: Mapping[str, int],
) -> list[str]:
    """Every run finished, claimed exactly once, started exactly once; else what
    went wrong. ``claims`` is None for workers that log no claim event (DBOS:
    its record's dequeue count stands in)."""
    problems: list[str] = []
    expected = {run_id for phase in phases for run_id in phase.submitted}
    missing = expected - facts.keys()
    if missing:
        problems.append(f"{len(missing)} run(s) not stored, e.g. {sorted(missing)[:3]}")
    unfinished = sorted(r for r in expected & facts.keys() if not facts[r].finished)
    if unfinished:
        problems.append(f"{len(unfinished)} run(s) not completed, e.g. {unfinished[:3]}")
    recount = sorted(r for r in expected & facts.keys() if not facts[r].claimed_once)
    if recount:
        problems.append(f"{len(recount)} record(s) show more than one claim, e.g. {recount[:3]}")
    logged = {"start": starts} if claims is None else {"claim": claims, "start": starts}
    for name, seen in logged.items():
        twice = sorted(r for r, lines in seen.items() if len(lines) > 1)
        if twice:
            pids = {r: sorted({line.pid for line in seen[r]}) for r in twice[:3]}
            problems.append(f"{len(twice)} run(s) with more than one {name} event: {pids}")
        never = sorted(expected - seen.keys())
        if never:
            problems.append(f"{len(never)} run(s) without a {name} event, e.g. {never[:3]}")
    for event in ("fail", "release", "lease_lost"):
        if counts.get(event):
            problems.append(f"{counts[event]} {event} event(s)")
    errors = {e: n for e, n in counts.items() if e.endswith("-error")}
    if errors:
        problems.append(f"store errors: {errors}")
    return problems


def per_worker(starts: Mapping[str, list[Line]]) -> tuple[int, int]:
    """Fewest and most runs one worker process started."""
    by_pid = Counter(line.pid for lines in starts.values() for line in lines)
    if not by_pid:
        return 0, 0
    return min(by_pid.values()), max(by_pid.values())


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table."""

    def pair(values: tuple[float, float] | None) -> str:
        if values is None:
            return "-"
        return f"{values[0]:.0f} / {values[1]:.0f}"

    rows = [
        "| target | settings | runs/s | total s | submit s | burst: submit→claim p50/p99 ms "
        "| burst: submit→start p50/p99 ms | paced: submit→claim p50/p99 ms "
        "| paced: submit→start p50/p99 ms | runs per worker min-max | PostgreSQL per run "
        "| CPU ms per run: workers / bench / server / other | worker calls per run "
        "| double claims, problems |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        problems = "; ".join(r.problems) if r.problems else "none"
        cpu = "-"
        if r.cpu_ms is not None:
            parts = ("workers", "bench", "server", "other")
            cpu = " / ".join(f"{r.cpu_ms[part]:.2f}" if part in r.cpu_ms else "-" for part in parts)
        calls = "-"
        if r.calls:
            c = r.calls
            calls = (
                f"claim_next {c['claim_next']:.1f} ({c['claim_next found nothing']:.1f} empty), "
                f"idle waits {c['wait_for_change']:.1f} ({c['wait_for_change woken']:.1f} woken)"
            )
        counted = "-"
        if r.per_run is not None:
            counted = ", ".join(f"{value:.1f} {key}" for key, value in r.per_run.items())
        rows.append(
            f"| {r.target} | {r.settings} | {r.rate:.0f} | {r.seconds:.1f} | "
            f"{r.submit_seconds:.1f} | {pair(r.claim_ms)} | {pair(r.start_ms)} | "
            f"{pair(r.paced_claim_ms)} | {pair(r.paced_start_ms)} | "
            f"{r.per_worker[0]}-{r.per_worker[1]} | {counted} | {cpu} | {calls} | {problems} |"
        )
    return "\n".join(rows)
