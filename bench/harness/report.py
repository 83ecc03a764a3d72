"""bench.md (the tables and the targets, met or not), bench.json and the PNG plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness.stats import Summary, values_summary

if TYPE_CHECKING:
    from bench.harness.run import Results

STORES = ("sqlite", "postgres", "redis")
AGENTS = (
    "outlast sqlite",
    "outlast postgres",
    "outlast redis",
    "langgraph",
    "langgraph delta",
    "dbos",
)
COLORS = {
    "sqlite": "tab:green",
    "postgres": "tab:blue",
    "redis": "tab:red",
    "outlast sqlite": "tab:green",
    "outlast postgres": "tab:blue",
    "outlast redis": "tab:red",
    "langgraph": "tab:purple",
    "langgraph delta": "tab:pink",
    "dbos": "tab:orange",
}
TARGET_RATIO = {"postgres": 1.3, "redis": 1.2}
FLAT = 1.1
EXECUTOR_MICROS = 10.0
RESUME_MS = 60.0
BYTES_RATIO = 1.2


def ms(s: Summary | None, factor: float = 1000.0, digits: int = 3) -> str:
    if s is None:
        return "-"
    s = s.scaled(factor)
    return f"{_num(s.median, digits)} ({_num(s.low, digits)}-{_num(s.high, digits)})"


def _num(value: float, digits: int = 3) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    if a is None or b is None or b.median == 0:
        return None
    return a.median / b.median


def x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def all_ok(values: list[bool | None]) -> bool | None:
    if not values or any(v is None for v in values):
        return None
    return all(values)


class Report:
    def __init__(self, results: Results) -> None:
        self.r = results
        self.s = results.settings
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for row in rows:
            self.add("| " + " | ".join(row) + " |")
        self.add("")

    def save_at(self, name: str, size: int) -> Summary | None:
        series = self.r.saves.get(name)
        return series.at(size) if series is not None else None

    # -- the targets --------------------------------------------------------------------------

    def targets(self) -> None:
        rows = []
        sizes = self.s.sizes
        for store, limit in TARGET_RATIO.items():
            ratios = [
                ratio(self.save_at(store, n), self.save_at(f"{store} floor", n)) for n in sizes
            ]
            measured = ", ".join(f"{n:,}: {x(q)}" for n, q in zip(sizes, ratios, strict=True))
            ok = all_ok([None if q is None else q <= limit for q in ratios])
            rows.append([f"{store} save ≤ {limit}x its floor (medians)", measured, verdict(ok)])
        for store in TARGET_RATIO:
            first, last = self.save_at(store, 10), self.save_at(store, 1000)
            flat = ratio(last, first)
            ok = None if flat is None else flat <= FLAT
            rows.append(
                [
                    f"{store} save flat: p50 at 1,000 messages ≤ {FLAT}x p50 at 10",
                    x(flat) if 1000 in sizes else "not measured (--quick)",
                    verdict(ok),
                ]
            )
        steps = [self.r.executor.at(n) for n in self.s.executor_sizes]
        micros = [None if s is None else s.median * 1e6 for s in steps]
        ok = all_ok([None if m is None else m <= EXECUTOR_MICROS for m in micros])
        if 10_000 not in self.s.executor_sizes:
            ok = None
        rows.append(
            [
                f"executor step without a store ≤ {EXECUTOR_MICROS:g} µs, flat to 10,000 messages",
                ", ".join(
                    f"{n:,}: {'-' if m is None else f'{m:.1f} µs'}"
                    for n, m in zip(self.s.executor_sizes, micros, strict=True)
                ),
                verdict(ok),
            ]
        )
        claims = {st: values_summary(self.r.resume_claim.get(st, [])) for st in STORES}
        ok = all_ok([None if c is None else c.median * 1000 <= RESUME_MS for c in claims.values()])
        rows.append(
            [
                f"resume (claim, transcript loaded) of {self.s.resume_messages:,} messages "
                f"≤ {RESUME_MS:g} ms",
                ", ".join(
                    f"{st}: {'-' if c is None else f'{c.median * 1000:.0f} ms'}"
                    for st, c in claims.items()
                ),
                verdict(ok),
            ]
        )
        byte_ratios = {st: self.bytes_ratio(st) for st in STORES}
        ok = all_ok([None if b is None else b <= BYTES_RATIO for b in byte_ratios.values()])
        rows.append(
            [
                f"bytes stored ≤ {BYTES_RATIO}x the transcript's (SQLite with its WAL), "
                f"{self.s.store_steps:,} messages",
                ", ".join(f"{st}: {x(b)}" for st, b in byte_ratios.items()),
                verdict(ok),
            ]
        )
        self.add("## Targets (issue 14)", "")
        self.table(["target", "measured (medians)", ""], rows)

    def bytes_ratio(self, name: str) -> float | None:
        stored = values_summary([float(b) for b in self.r.save_bytes.get(name, [])])
        own = values_summary([float(b) for b in self.r.save_transcript_bytes])
        return ratio(stored, own)

    # -- the tables ---------------------------------------------------------------------------

    def saves(self) -> None:
        sizes = self.s.sizes
        header = ["target", *(f"ms per save at {n:,} messages" for n in sizes)]
        header.append("x its floor at " + " / ".join(f"{n:,}" for n in sizes))
        rows = []
        for store in STORES:
            for name in (store, f"{store} floor"):
                row = [name, *(ms(self.save_at(name, n)) for n in sizes)]
                if name == store:
                    row.append(
                        " / ".join(
                            x(ratio(self.save_at(store, n), self.save_at(f"{store} floor", n)))
                            for n in sizes
                        )
                    )
                else:
                    row.append("1")
                rows.append(row)
        self.add(
            "## Saves against the floor",
            "",
            "Per repetition, for each length a run per store already that long (less "
            f"{self.s.sample_saves // 2}) saved {self.s.sample_saves} times one ~1 KiB message "
            "longer, every (length, target) pair in turn with the floors: each length is "
            f"sampled at the same moments. {self.s.reps} repetitions. Each cell: the median of "
            "every save, and in brackets the least and greatest per-repetition median. The "
            f"plot is the growth run: one run to {self.s.store_steps:,} messages, a save after "
            "every step, the six targets round-robin.",
            "",
        )
        self.table(header, rows)

    def executor(self) -> None:
        sizes = self.s.executor_sizes
        self.add(
            "## The executor without a store",
            "",
            "bench/executor_step.py's run (an Agent, instant model and tool, "
            f"{self.s.executor_steps:,} steps of two messages), once per repetition: "
            "µs per agent step.",
            "",
        )
        self.table(
            ["", *(f"at {n:,} messages" for n in sizes)],
            [["µs per step", *(ms(self.r.executor.at(n), 1e6, 2) for n in sizes)]],
        )

    def resume(self) -> None:
        rows = []
        for store in STORES:
            rows.append(
                [
                    store,
                    ms(values_summary(self.r.resume_claim.get(store, []))),
                    ms(values_summary(self.r.resume_load.get(store, []))),
                ]
            )
        self.add(
            f"## Resume of a {self.s.resume_messages:,}-message run",
            "",
            "The run was released (as a crashed worker's lease lapses); a claim takes it "
            "over and returns its transcript decoded (outlast's resume), then a load reads it. "
            f"{len(self.r.resume_claim.get('sqlite', []))} of each per store, round-robin; "
            "in brackets the fastest and the slowest.",
            "",
        )
        self.table(["store", "claim ms", "load ms"], rows)

    def stored(self) -> None:
        own = values_summary([float(b) for b in self.r.save_transcript_bytes])
        rows = []
        for store in STORES:
            for name in (store, f"{store} floor"):
                stored = values_summary([float(b) for b in self.r.save_bytes.get(name, [])])
                rows.append([name, _bytes(stored), x(ratio(stored, own))])
        self.add(
            "## Bytes stored",
            "",
            f"What one run of {self.s.store_steps:,} messages added, in a fresh place each "
            f"repetition; the transcript's own bytes (its messages' JSON): {_bytes(own)}. "
            "SQLite: the file and its -wal; PostgreSQL: pg_total_relation_size of the tables "
            "(heap, TOAST, indexes); Redis: MEMORY USAGE of the keys.",
            "",
        )
        self.table(["target", "bytes", "x transcript"], rows)

    def agents(self) -> None:
        sizes = self.s.agent_sizes
        floor_series = self.r.saves.get("postgres floor")
        floor = floor_series.overall() if floor_series is not None else None
        top = sizes[-1]
        base = self.agent_at("outlast postgres", top)
        header = [
            "target",
            *(f"ms per step at {n:,} messages" for n in sizes),
            f"x PostgreSQL INSERT at {top:,}",
            f"x outlast postgres at {top:,}",
            f"bytes after {self.s.agent_steps:,} steps",
            "x transcript",
            "round trips per step",
            "statements per step",
        ]
        rows = []
        own = float(self.r.agent_transcript_bytes)
        for name in AGENTS:
            if name not in self.r.agents and name in self.r.problems:
                rows.append([name, self.r.problems[name], *["-"] * (len(header) - 2)])
                continue
            if name not in self.r.agents:
                continue
            at_top = self.agent_at(name, top)
            stored = values_summary([float(b) for b in self.r.agent_bytes.get(name, [])])
            rows.append(
                [
                    name,
                    *(ms(self.agent_at(name, n)) for n in sizes),
                    x(ratio(at_top, floor)),
                    x(ratio(at_top, base)),
                    _bytes(stored),
                    x(None if stored is None or not own else stored.median / own),
                    _per(self.r.round_trips.get(name, {}).get("agent step")),
                    _per(self.r.statements.get(name, {}).get("agent step")),
                ]
            )
        self.add(
            "## Agent steps: outlast and the peers",
            "",
            f"A run of {self.s.agent_steps:,} agent steps (a reply calling one tool, ~100 B, and "
            "the tool's ~1 KiB result: two messages a step), every framework a step in turn; "
            f"{self.s.agent_reps} repetition(s). The x-axis length counts messages. LangGraph "
            "and DBOS on the same private PostgreSQL, each in a database of its own. "
            "The ratio to a PostgreSQL INSERT divides by the floor's median over all its "
            "samples (above; it does not grow with the transcript).",
            "",
        )
        self.table(header, rows)

    def agent_at(self, name: str, size: int) -> Summary | None:
        series = self.r.agents.get(name)
        return series.at(size) if series is not None else None

    def counts(self) -> None:
        ops = ["begin", "save", "load", "release", "claim", "complete", "insert", "rpush"]
        rows = []
        for name in ("postgres", "postgres floor", "redis", "redis floor"):
            trips = self.r.round_trips.get(name, {})
            statements = self.r.statements.get(name, {})
            if not trips:
                continue
            cells = []
            for op in ops:
                if op not in trips:
                    cells.append("-")
                elif name.startswith("postgres"):
                    cells.append(f"{_per(trips[op])} ({_per(statements.get(op))})")
                else:
                    cells.append(_per(trips[op]))
            rows.append([name, *cells])
        self.add(
            "## Round trips per operation",
            "",
            "Counted by a proxy in front of each server (a round trip: a flight of bytes from "
            "the client after the server's answer to the previous one), outside the timed "
            "phases; for PostgreSQL, statements in brackets (pg_stat_statements, BEGIN and "
            f"COMMIT included). Saves at ~100 messages; {self.s.count_ops} of each. SQLite "
            "is in-process: no round trips.",
            "",
        )
        self.table(["target", *ops], rows)

    def machine(self) -> None:
        self.add("## The machine", "")
        for key, value in self.r.facts.items():
            self.add(f"- {key}: {value}")
        self.add("")

    def problems(self) -> None:
        if self.r.problems:
            self.add("## Problems", "")
            for name, problem in self.r.problems.items():
                self.add(f"- {name}: {problem}")
            self.add("")

    def render(self) -> str:
        mode = "--quick" if self.s.quick else "full"
        self.add(
            "# outlast bench results",
            "",
            f"`nox -s bench` ({mode} run, {self.r.seconds:.0f} s), written by bench/harness. "
            "Plots: [store_saves.png](store_saves.png), [agent_steps.png](agent_steps.png).",
            "",
        )
        shared = self.shared_note()
        if shared:
            self.add(shared, "")
        self.targets()
        self.saves()
        self.executor()
        self.resume()
        self.stored()
        self.agents()
        self.counts()
        self.problems()
        self.machine()
        return "\n".join(self.lines).rstrip() + "\n"

    def shared_note(self) -> str:
        cores = os.cpu_count() or 1
        loads = []
        for key in ("load average at start (1/5/15 min)", "load average at end (1/5/15 min)"):
            value = self.r.facts.get(key)
            if value:
                loads.append(float(value.split(" / ")[0]))
        if loads and max(loads) > cores:
            return (
                f"**The machine was shared with other work**: the 1-minute load average was "
                f"{' and '.join(f'{v:.1f}' for v in loads)} (start, end) on {cores} cores. "
                "Every target ran interleaved, so each saw the same contention, but absolute "
                "times are higher and noisier than on an idle machine."
            )
        return ""


def _bytes(s: Summary | None) -> str:
    if s is None:
        return "-"
    return f"{s.median / 1024:,.0f} KiB" if s.median < 10 * 1024 * 1024 else _mib(s.median)


def _mib(value: float) -> str:
    return f"{value / 1024 / 1024:,.1f} MiB"


def _per(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plots(results: Results, directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for store in STORES:
        for name, style in ((store, "-"), (f"{store} floor", "--")):
            series = results.growth.get(name)
            if series is None:
                continue
            curve = series.curve()
            axes.plot(
                [p[0] for p in curve],
                [p[1] * 1000 for p in curve],
                style,
                color=COLORS[store],
                label=name,
            )
    _decorate(axes, "ms per save (median per length bin)", "save cost against transcript length")
    written.append(_save(figure, directory / "store_saves.png"))
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for name in AGENTS:
        series = results.agents.get(name)
        if series is None:
            continue
        curve = series.curve()
        axes.plot(
            [p[0] for p in curve],
            [p[1] * 1000 for p in curve],
            "-" if name.startswith("outlast") else "-.",
            color=COLORS[name],
            label=name,
        )
    _decorate(axes, "ms per agent step (median per length bin)", "agent step cost, with checkpoint")
    written.append(_save(figure, directory / "agent_steps.png"))
    plt.close(figure)
    return written


def _decorate(axes: Any, ylabel: str, title: str) -> None:
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.set_xlabel("messages in the transcript")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path


def summary(results: Results) -> dict[str, Any]:
    """The medians (and noise) behind the tables, for diffing runs."""

    def s(value: Summary | None) -> list[float] | None:
        return None if value is None else [value.median, value.low, value.high]

    settings = results.settings
    return {
        "settings": vars(settings),
        "facts": results.facts,
        "seconds": results.seconds,
        "saves_seconds": {
            name: {n: s(series.at(n)) for n in settings.sizes}
            for name, series in results.saves.items()
        },
        "save_bytes": dict(results.save_bytes),
        "save_transcript_bytes": results.save_transcript_bytes,
        "executor_seconds": {n: s(results.executor.at(n)) for n in settings.executor_sizes},
        "resume_claim_seconds": dict(results.resume_claim),
        "resume_load_seconds": dict(results.resume_load),
        "agent_step_seconds": {
            name: {n: s(series.at(n)) for n in settings.agent_sizes}
            for name, series in results.agents.items()
        },
        "agent_bytes": dict(results.agent_bytes),
        "agent_transcript_bytes": results.agent_transcript_bytes,
        "round_trips": dict(results.round_trips),
        "statements": dict(results.statements),
        "problems": results.problems,
    }


def write(results: Results, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / "bench.md"
    markdown.write_text(Report(results).render())
    data = directory / "bench.json"
    data.write_text(json.dumps(summary(results), indent=1, default=str) + "\n")
    return [markdown, data, *plots(results, directory)]
