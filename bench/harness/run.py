"""The comparison bench: outlast's stores against the round-trip floor and the peers.

    nox -s bench [-- --quick]            # installs the peers in its own venv
    python -m bench.harness [--quick] [--results DIR] [--no-peers]

Starts a private PostgreSQL and Redis (servers.py), then, in one run,
repeats ``--reps`` times, each time running every target round-robin, one
step each in turn:

1. **saves** (stores.py): outlast's SQLite, PostgreSQL and Redis stores and
   each one's floor, a run growing by one ~1 KiB message a step to 1,000
   messages, a save after every step (the plot; bytes stored at the end);
   then runs already 10, 100 and 1,000 messages long, saved one message
   longer in turn with the floors (the table);
2. **executor** without a store (bench/executor_step.py's run): microseconds
   per agent step up to 10,000 messages;
3. **resume**: a claim and a load of a 10,000-message run on each store;
4. **agents** (agents.py; fewer repetitions): whole agent steps on outlast
   (three stores), LangGraph's Postgres saver (with and without its delta
   channel) and DBOS, to 1,000 messages; bytes stored at the end.

Then, through counting proxies (counting.py, untimed): round trips and
PostgreSQL statements per operation. Writes bench.md, bench.json and PNG plots
to ``--results`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import outlast
from bench.harness import counting, facts, report
from bench.harness.agents import (
    AgentTarget,
    DbosAgent,
    LangGraphAgent,
    OutlastAgent,
    peers_available,
)
from bench.harness.servers import PrivatePostgres, PrivateRedis
from bench.harness.stats import Series
from bench.harness.stores import (
    NAMESPACE,
    OutlastSaver,
    PostgresFloor,
    RedisFloor,
    Saver,
    SqliteFloor,
    build_resume_run,
    postgres_bytes,
    redis_bytes,
    sqlite_bytes,
    time_resume,
)
from bench.harness.workload import (
    Gate,
    encoded,
    store_message,
    transcript_bytes,
)
from outlast import Message
from outlast.adapter import CheckpointState, RunStart

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent.parent / "results"


@dataclass(frozen=True)
class Settings:
    quick: bool
    reps: int
    store_steps: int
    sizes: tuple[int, ...]
    executor_steps: int
    executor_sizes: tuple[int, ...]
    resume_messages: int
    resume_rounds: int
    agent_steps: int
    agent_sizes: tuple[int, ...]
    agent_reps: int
    count_ops: int
    peers: bool
    sample_saves: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Settings:
        if args.quick:
            return cls(
                quick=True,
                reps=2,
                store_steps=120,
                sizes=(10, 100),
                executor_steps=1000,
                executor_sizes=(10, 100, 1000),
                resume_messages=10_000,
                resume_rounds=2,
                agent_steps=60,
                agent_sizes=(10, 100),
                agent_reps=1,
                count_ops=5,
                peers=args.peers,
                sample_saves=10,
            )
        return cls(
            quick=False,
            reps=args.reps,
            store_steps=1000,
            sizes=(10, 100, 1000),
            executor_steps=5000,
            executor_sizes=(10, 100, 1000, 10_000),
            resume_messages=10_000,
            resume_rounds=2,
            agent_steps=500,
            agent_sizes=(10, 100, 1000),
            agent_reps=args.agent_reps,
            count_ops=20,
            peers=args.peers,
            sample_saves=20,
        )


@dataclass
class Results:
    settings: Settings
    facts: dict[str, str] = field(default_factory=dict)
    saves: dict[str, Series] = field(default_factory=lambda: defaultdict(Series))
    growth: dict[str, Series] = field(default_factory=lambda: defaultdict(Series))
    save_bytes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    save_transcript_bytes: list[int] = field(default_factory=list)
    executor: Series = field(default_factory=Series)
    resume_claim: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    resume_load: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    agents: dict[str, Series] = field(default_factory=lambda: defaultdict(Series))
    agent_bytes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    agent_transcript_bytes: int = 0
    problems: dict[str, str] = field(default_factory=dict)
    round_trips: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    statements: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    seconds: float = 0.0


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def with_query(url: str, **options: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return url + ("&" if "?" in url else "?") + query


class Bench:
    def __init__(self, settings: Settings, scratch: Path) -> None:
        self.settings = settings
        self.scratch = scratch
        self.pg = PrivatePostgres(scratch / "postgres")
        self.redis = PrivateRedis(scratch / "redis")
        self.results = Results(settings)
        self.peers = peers_available() if settings.peers else {}
        for name, problem in self.peers.items():
            if problem is not None:
                self.results.problems[name] = problem
        self.resume_stores: dict[str, outlast.Store] = {}

    # -- the servers and the places ---------------------------------------------------------

    def start_servers(self) -> None:
        say(f"starting a private PostgreSQL ({self.pg.bindir}) on port {self.pg.port}")
        self.pg.start()
        say(f"starting a private Redis on port {self.redis.port}")
        self.redis.start()
        for database in ("outlast", "floor", "agents"):
            self.pg.create_database(database)

    def stop_servers(self) -> None:
        self.pg.stop()
        self.redis.stop()

    def store_url(self, store: str, place: str) -> str:
        if store == "sqlite":
            return f"sqlite:///{self.scratch / f'{place}.db'}"
        if store == "postgres":
            return with_query(self.pg.url("outlast"), schema=place.replace("-", "_"))
        return with_query(self.redis.url(), prefix=place)

    def measure(self, store: str, place: str) -> Callable[[], int]:
        if store == "sqlite":
            path = self.scratch / f"{place}.db"
            return lambda: sqlite_bytes(path)
        if store == "postgres":
            url, schema = self.pg.url("outlast"), place.replace("-", "_")
            return lambda: postgres_bytes(url, schema=schema)
        url = self.redis.url()
        return lambda: redis_bytes(url, f"{place}:*")

    # -- 1. saves against the floor ---------------------------------------------------------

    async def saves(self, rep: int) -> None:
        steps = self.settings.store_steps
        targets: list[Saver] = []
        for store in ("sqlite", "postgres", "redis"):
            place = f"saves-r{rep}-{store}"
            targets.append(
                OutlastSaver(
                    store, self.store_url(store, place), f"run-{rep}", self.measure(store, place)
                )
            )
        targets.append(SqliteFloor(self.scratch / f"floor-r{rep}.db"))
        targets.append(PostgresFloor(self.pg.url("floor"), f"floor_r{rep}"))
        targets.append(RedisFloor(self.redis.url(), f"floor-r{rep}"))
        say(f"rep {rep + 1}: saves, {len(targets)} targets round-robin, {steps} steps")
        messages: list[Message] = []
        try:
            for target in targets:
                await target.open()
            for i in range(steps):
                message = store_message(i)
                messages.append(message)
                body = encoded(message)
                shift = i % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    seconds = await target.step(message, body, i)
                    self.results.growth[target.name].add(rep, i + 1, seconds)
                if (i + 1) % 250 == 0:
                    say(f"  {i + 1} messages")
            for target in targets:
                self.results.save_bytes[target.name].append(await target.bytes_added())
            self.results.save_transcript_bytes.append(transcript_bytes(messages))
        finally:
            for target in targets:
                await target.close()

    async def sampled_saves(self, rep: int) -> None:
        """Saves at each length at the same moments: a run per store already
        ``size - k/2`` messages long for each size, each saved ``k`` times
        one message longer, every (size, target) pair in turn with the floors.
        In a growth run the long saves come late, so a drift of the machine's
        load would pass for growth; here every length sees the same moments."""
        k = self.settings.sample_saves
        targets: list[tuple[int, Saver]] = []
        for size in self.settings.sizes:
            start = max(0, size - k // 2)
            prefill = [store_message(i) for i in range(start)]
            for store in ("sqlite", "postgres", "redis"):
                place = f"sampled-r{rep}-{store}"
                url = self.store_url(store, place)
                run = OutlastSaver(store, url, f"s{size}", lambda: 0, prefill)
                targets.append((size, run))
            targets.append((size, SqliteFloor(self.scratch / f"sfloor-r{rep}-{size}.db")))
            targets.append((size, PostgresFloor(self.pg.url("floor"), f"sfloor_r{rep}_{size}")))
            targets.append((size, RedisFloor(self.redis.url(), f"sfloor-r{rep}-{size}")))
        say(
            f"rep {rep + 1}: saves at {', '.join(map(str, self.settings.sizes))} messages, "
            f"{len(targets)} runs round-robin, {k} saves each"
        )
        try:
            for _, target in targets:
                await target.open()
            for j in range(k):
                shift = j % len(targets)
                for size, target in targets[shift:] + targets[:shift]:
                    index = max(0, size - k // 2) + j
                    message = store_message(index)
                    seconds = await target.step(message, encoded(message), j)
                    self.results.saves[target.name].add(rep, index + 1, seconds)
        finally:
            for _, target in targets:
                await target.close()

    # -- 2. the executor without a store ----------------------------------------------------

    async def executor(self, rep: int) -> None:
        from bench.executor_step import one_run, without_observers

        steps = self.settings.executor_steps
        say(f"rep {rep + 1}: executor without a store, {steps} agent steps")
        # outlast's own work: an installed observer plugin (OpenTelemetry's,
        # in a developer's venv) would add its own per event.
        with without_observers():
            micros_per_step = await one_run(steps)
        for index, micros in enumerate(micros_per_step):
            # interval ``index``: from model call index+1 to index+2, the transcript
            # holding the user's message and index+1 steps of two messages
            self.results.executor.add(rep, 2 * (index + 1) + 1, micros / 1e6)

    # -- 3. resume ----------------------------------------------------------------------------

    async def build_resume_runs(self) -> None:
        count = self.settings.resume_messages
        messages = [store_message(i) for i in range(count)]
        for store in ("sqlite", "postgres", "redis"):
            say(f"resume: writing a released run of {count} messages to {store}")
            self.resume_stores[store] = await build_resume_run(
                self.store_url(store, f"resume-{store}"), "resume", messages
            )

    async def resume(self, rep: int) -> None:
        say(f"rep {rep + 1}: resume of {self.settings.resume_messages} messages, round-robin")
        stores = list(self.resume_stores.items())
        for round_ in range(self.settings.resume_rounds):
            shift = (rep + round_) % len(stores)
            for store, handle in stores[shift:] + stores[:shift]:
                claimed, loaded = await time_resume(handle, "resume", self.settings.resume_messages)
                self.results.resume_claim[store].append(claimed)
                self.results.resume_load[store].append(loaded)

    # -- 4. agents: outlast and the peers ---------------------------------------------------

    def agent_targets(self, rep: int, prefix: str, via: dict[str, int] | None) -> list[AgentTarget]:
        """Every framework's target in fresh places; ``via`` maps a server to a proxy port."""
        pg_port = (via or {}).get("postgres", self.pg.port)
        redis_port = (via or {}).get("redis", self.redis.port)

        def pg_url(database: str) -> str:
            return f"postgresql://postgres@127.0.0.1:{pg_port}/{database}"

        targets: list[AgentTarget] = []
        place = f"{prefix}-r{rep}"
        sqlite_path = self.scratch / f"{place}-sqlite.db"
        if via is None:
            targets.append(
                OutlastAgent(
                    "sqlite", f"sqlite:///{sqlite_path}", lambda: sqlite_bytes(sqlite_path)
                )
            )
        schema = f"{prefix}_r{rep}"
        admin = self.pg.url("agents")
        targets.append(
            OutlastAgent(
                "postgres",
                with_query(pg_url("agents"), schema=schema),
                lambda: postgres_bytes(admin, schema=schema),
            )
        )
        redis_admin = self.redis.url()
        targets.append(
            OutlastAgent(
                "redis",
                with_query(f"redis://127.0.0.1:{redis_port}/0", prefix=place),
                lambda: redis_bytes(redis_admin, f"{place}:*"),
            )
        )
        for name, delta in (("langgraph", False), ("langgraph delta", True)):
            if self.peers.get(name, "off") is None:
                database = f"{prefix}_{'lgd' if delta else 'lg'}_r{rep}"
                self.pg.create_database(database)
                direct = self.pg.url(database)
                targets.append(
                    LangGraphAgent(
                        pg_url(database), delta, lambda direct=direct: postgres_bytes(direct)
                    )
                )
        if self.peers.get("dbos", "off") is None:
            database = f"{prefix}_dbos_r{rep}"
            self.pg.create_database(database)
            direct = self.pg.url(database)
            targets.append(DbosAgent(pg_url(database), lambda: postgres_bytes(direct)))
        return targets

    async def open_agents(self, targets: list[AgentTarget]) -> list[AgentTarget]:
        opened = []
        for target in targets:
            try:
                await target.open()
            except Exception as exc:  # noqa: BLE001 - a peer that cannot start is reported
                self.results.problems[target.name] = f"could not start: {exc!r}"
                say(f"  {target.name}: could not start: {exc!r}")
                await target.close()
            else:
                opened.append(target)
        return opened

    async def agents(self, rep: int) -> None:
        steps = self.settings.agent_steps
        targets = await self.open_agents(self.agent_targets(rep, "agents", None))
        say(f"rep {rep + 1}: agent steps, {len(targets)} targets round-robin, {steps} steps")
        gates = await self.start_gated(targets, steps, f"agent-{rep}")
        try:
            for k in range(steps):
                live = [t for t in targets if t.name in gates]
                shift = k % max(1, len(live))
                for target in live[shift:] + live[:shift]:
                    seconds = await self.step(target, gates)
                    if seconds is not None:
                        self.results.agents[target.name].add(rep, 1 + 2 * k, seconds)
                if (k + 1) % 100 == 0:
                    say(f"  {k + 1} steps ({1 + 2 * (k + 1)} messages)")
            for target in targets:
                if target.name in gates:  # still running: the transcript is all there
                    self.results.agent_bytes[target.name].append(await target.bytes_added())
            await self.finish(targets, gates)
        finally:
            await self.close_all(targets, gates)
        self.results.agent_transcript_bytes = transcript_bytes(agent_transcript(steps))

    async def start_gated(
        self, targets: list[AgentTarget], steps: int, run_id: str
    ) -> dict[str, Gate]:
        gates: dict[str, Gate] = {}
        for target in targets:
            gate = Gate()
            gate.start(target.run(gate, steps, run_id))
            try:
                await asyncio.wait_for(gate.ready(), 120)
            except Exception as exc:  # noqa: BLE001 - reported, the others go on
                self.fail(target, exc)
            else:
                gates[target.name] = gate
        return gates

    def fail(self, target: AgentTarget, exc: BaseException) -> None:
        self.results.problems[target.name] = f"failed: {exc!r}"
        say(f"  {target.name} failed: {exc!r}")

    async def step(self, target: AgentTarget, gates: dict[str, Gate]) -> float | None:
        try:
            return await asyncio.wait_for(gates[target.name].step(), 120)
        except Exception as exc:  # noqa: BLE001 - reported, the others go on
            self.fail(target, exc)
            gate = gates.pop(target.name)
            if gate.task is not None:
                gate.task.cancel()
            return None

    async def finish(self, targets: list[AgentTarget], gates: dict[str, Gate]) -> None:
        for target in targets:
            if target.name in gates:
                await self.step(target, gates)  # the final answer
                if target.name in gates:
                    try:
                        await asyncio.wait_for(gates[target.name].finish(), 120)
                    except Exception as exc:  # noqa: BLE001
                        self.fail(target, exc)
                    gates.pop(target.name, None)

    async def close_all(self, targets: list[AgentTarget], gates: dict[str, Gate]) -> None:
        for gate in gates.values():
            if gate.task is not None and not gate.task.done():
                gate.task.cancel()
        for target in targets:
            try:
                await target.close()
            except Exception as exc:  # noqa: BLE001
                say(f"  {target.name}: close failed: {exc!r}")

    # -- 5. round trips and statements, through the counting proxies ------------------------

    async def count(self) -> None:
        say("counting round trips and statements (through proxies, untimed)")
        pg_proxy = counting.RoundTripProxy(self.pg.port)
        redis_proxy = counting.RoundTripProxy(self.redis.port)
        await pg_proxy.start()
        await redis_proxy.start()
        proxies = {"postgres": pg_proxy, "redis": redis_proxy}
        try:
            self.pg.create_database("counting")
            for store, proxy in proxies.items():
                if store == "postgres":
                    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/counting?schema=counted"
                else:
                    url = f"redis://127.0.0.1:{proxy.port}/0?prefix=counted"
                await self.count_store(store, url, proxy)
            await self.count_floors(pg_proxy, redis_proxy)
            await self.count_agents(proxies)
        finally:
            await pg_proxy.close()
            await redis_proxy.close()

    def pg_statements(self, database: str) -> int:
        return counting.statements(self.pg.url()).get(database, 0)

    async def count_store(self, store: str, url: str, proxy: counting.RoundTripProxy) -> None:
        n = self.settings.count_ops
        trips: dict[str, list[int]] = defaultdict(list)
        statements: dict[str, list[int]] = defaultdict(list)

        async def counted(op: str, action: Callable[[], Awaitable[T]]) -> T:
            before = proxy.round_trips, self.pg_statements("counting")
            value = await action()
            trips[op].append(proxy.round_trips - before[0])
            statements[op].append(self.pg_statements("counting") - before[1])
            return value

        handle = outlast.open(url)
        await warm_up(handle)  # connected, migrated, scripts loaded, statements prepared
        start = RunStart("counted", "bench", None, namespace=NAMESPACE, owner="bench")
        cp = await counted("begin", lambda: handle.begin(start))
        history = [store_message(i) for i in range(100)]
        await cp.save(CheckpointState(tuple(history)))
        for i in range(100, 100 + n):
            history.append(store_message(i))
            state = CheckpointState(tuple(history))
            await counted("save", lambda state=state: cp.save(state))
        for _ in range(n):
            await counted("load", lambda: handle.load("counted", NAMESPACE))
        for _ in range(n):
            await counted("release", cp.release)
            claim = await counted(
                "claim",
                lambda: handle.claim("counted", owner="bench", lease=30.0, namespace=NAMESPACE),
            )
            assert claim is not None
            cp = claim.checkpointer
        await counted("complete", lambda: cp.complete("done"))
        await handle.close()
        for op, values in trips.items():
            self.results.round_trips[store][op] = sum(values) / len(values)
            if store == "postgres":
                self.results.statements[store][op] = sum(statements[op]) / len(values)

    async def count_floors(
        self, pg_proxy: counting.RoundTripProxy, redis_proxy: counting.RoundTripProxy
    ) -> None:
        n = self.settings.count_ops
        floors: list[tuple[Saver, counting.RoundTripProxy, str]] = [
            (
                PostgresFloor(f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/counting", "fl"),
                pg_proxy,
                "insert",
            ),
            (
                RedisFloor(f"redis://127.0.0.1:{redis_proxy.port}/0", "floor-counted"),
                redis_proxy,
                "rpush",
            ),
        ]
        for floor, proxy, op in floors:
            await floor.open()
            trips, statements = proxy.round_trips, self.pg_statements("counting")
            for i in range(n):
                message = store_message(i)
                await floor.step(message, encoded(message), i)
            self.results.round_trips[floor.name][op] = (proxy.round_trips - trips) / n
            if floor.store == "postgres":
                self.results.statements[floor.name][op] = (
                    self.pg_statements("counting") - statements
                ) / n
            await floor.close()

    async def count_agents(self, proxies: dict[str, counting.RoundTripProxy]) -> None:
        n = self.settings.count_ops
        via = {store: proxy.port for store, proxy in proxies.items()}
        for target in self.agent_targets(0, "counting", via):
            opened = await self.open_agents([target])
            if not opened:
                continue
            proxy = proxies["redis" if target.name == "outlast redis" else "postgres"]
            database = self.database_of(target)
            gates = await self.start_gated(opened, n, f"count-{target.name.replace(' ', '-')}")
            try:
                trips, statements = proxy.round_trips, self.pg_statements(database)
                done = 0
                for _ in range(n):
                    if await self.step(target, gates) is None:
                        break
                    done += 1
                if done:
                    self.results.round_trips[target.name]["agent step"] = (
                        proxy.round_trips - trips
                    ) / done
                    if proxy is proxies["postgres"]:
                        self.results.statements[target.name]["agent step"] = (
                            self.pg_statements(database) - statements
                        ) / done
                await self.finish(opened, gates)
            finally:
                await self.close_all(opened, gates)

    @staticmethod
    def database_of(target: AgentTarget) -> str:
        if isinstance(target, OutlastAgent):
            return "agents"
        url = getattr(target, "url", "")
        return str(url).rsplit("/", 1)[-1].split("?")[0]

    # -- everything ---------------------------------------------------------------------------

    async def run(self) -> Results:
        began = time.monotonic()
        self.results.facts = facts.machine(start=True)
        self.start_servers()
        self.results.facts.update(facts.servers(self.pg, self.redis))
        await self.build_resume_runs()
        for rep in range(self.settings.reps):
            await self.saves(rep)
            await self.sampled_saves(rep)
            await self.executor(rep)
            await self.resume(rep)
            if rep < self.settings.agent_reps:
                await self.agents(rep)
        for store in self.resume_stores.values():
            await store.close()
        await self.count()
        self.results.facts.update(facts.machine(start=False))
        self.results.seconds = time.monotonic() - began
        return self.results


async def warm_up(handle: outlast.Store) -> None:
    """Every operation the counting phase counts, once, on a run of its own, some
    of them a few times (psycopg prepares a statement on its 5th execution)."""
    cp = await handle.begin(RunStart("warm-up", "bench", None, namespace=NAMESPACE, owner="bench"))
    history: list[Message] = []
    for i in range(6):
        history.append(store_message(i))
        await cp.save(CheckpointState(tuple(history)))
        await handle.load("warm-up", NAMESPACE)
        await cp.release()
        claim = await handle.claim("warm-up", owner="bench", lease=30.0, namespace=NAMESPACE)
        assert claim is not None
        cp = claim.checkpointer
    await cp.complete("done")
    for i in range(6):
        start = RunStart(f"warm-up-{i}", "bench", None, namespace=NAMESPACE, owner="bench")
        await (await handle.begin(start)).complete("done")


class OnceFilter(logging.Filter):
    """Lets each distinct message template through once (outlast-redis warns, once per
    store, that the bench's Redis persists nothing: the bench opens many stores)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[object] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.seen:
            return False
        self.seen.add(record.msg)
        return True


def agent_transcript(steps: int) -> list[Message]:
    from bench.harness.workload import agent_reply, agent_result

    messages = [Message.user("go")]
    for step in range(1, steps + 1):
        messages += [agent_reply(step), agent_result(step)]
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.harness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument(
        "--agent-reps", type=int, default=3, help="repetitions of the agent phase (default 3)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write")
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the peers")
    args = parser.parse_args(argv)
    logging.getLogger("outlast.redis").addFilter(OnceFilter())
    settings = Settings.of(args)
    results_dir: Path = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="outlast-bench-") as scratch:
        bench = Bench(settings, Path(scratch))
        try:
            results = asyncio.run(bench.run())
        finally:
            bench.stop_servers()
    written = report.write(results, results_dir)
    say(f"done in {results.seconds:.0f} s; wrote {', '.join(str(p) for p in written)}")
    if results.problems:
        say("problems: " + "; ".join(f"{k}: {v}" for k, v in results.problems.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
