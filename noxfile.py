"""Developer and CI sessions: CI runs exactly these (see .ci/run).

    nox -s demo        # the README's first command, in a scratch directory
    nox -s tests       # every package's tests and the conformance suite, all backends
    nox -s lint typecheck
    nox -s chaos       # the crash suite: worker fleets killed, servers restarted (chaos/)
    nox -s wheels      # every distribution's wheel into dist/: pip install --find-links dist ...
    nox -s installed   # the README's install lines, in fresh virtualenvs outside the repo
    nox -s core conformance postgres redis s3 jsondir   # one package at a time

Service URLs come from OUTLAST_TEST_POSTGRES_URL / OUTLAST_TEST_REDIS_URL;
OUTLAST_TEST_STRICT=1 turns a skipped backend into a failure (CI sets it).
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

CORE = "./core"
CONFORMANCE = "./conformance_tests"
ADAPTERS = {
    "postgres": "./adapters/postgres",
    "redis": "./adapters/redis",
    "s3": "./adapters/s3",
}
JSONDIR = "./examples/jsondir"
OPENTELEMETRY = "./plugins/opentelemetry"
CORE_EXTRAS = f"{CORE}[openai,anthropic,fast]"  # the model clients' SDKs, orjson
FAST_ADAPTERS = [f"{ADAPTERS['postgres']}[binary]", f"{ADAPTERS['redis']}[hiredis]", ADAPTERS["s3"]]
"""The adapters as the README recommends installing them: with their fast builds."""
EVERYTHING = [CORE_EXTRAS, CONFORMANCE, *FAST_ADAPTERS, JSONDIR, f"{OPENTELEMETRY}[test]"]
EXAMPLE_APPS = ["examples/refund_approval/app.py", "examples/openai_compatible/agent.py"]
TEST_DIRS = {
    "core": ["core/tests"],
    "conformance": ["conformance_tests/tests"],
    "postgres": ["adapters/postgres/tests"],
    "redis": ["adapters/redis/tests"],
    "s3": ["adapters/s3/tests"],
    "jsondir": ["examples/jsondir/tests"],
    "opentelemetry": ["plugins/opentelemetry/tests"],
}
TOOLS = ["pytest>=8", "pytest-asyncio>=1.0", "moto[server]>=5.1"]
WHEELHOUSE = "dist"  # git-ignored; the README's `pip install --find-links dist ...`


def install(session: nox.Session, *packages: str) -> None:
    """Install the local distributions (editable) plus the test tools."""
    session.install(*TOOLS)
    for package in packages:
        session.install("-e", package)


def pytest(session: nox.Session, *dirs: str) -> None:
    session.run("python", "-m", "pytest", *dirs, *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Install core and run `outlast demo` on a SQLite file in a scratch directory."""
    session.install(CORE)
    with tempfile.TemporaryDirectory() as scratch:
        session.chdir(scratch)
        session.run("outlast", "demo")


@nox.session
def tests(session: nox.Session) -> None:
    """Every test of every package: core, conformance (memory, SQLite), adapters, example."""
    install(session, *EVERYTHING)
    pytest(session, *[d for dirs in TEST_DIRS.values() for d in dirs])


def _package_session(name: str, dirs: list[str]) -> None:
    def run(session: nox.Session) -> None:
        install(session, *EVERYTHING)
        pytest(session, *dirs)

    run.__doc__ = f"Only the {name} tests ({', '.join(dirs)})."
    nox.session(name=name)(run)


for _name, _dirs in TEST_DIRS.items():
    _package_session(_name, _dirs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The crash suite: worker fleets killed, stopped and cut off from their store.

    chaos/README.md: fleets of `outlast worker` processes on SQLite, PostgreSQL,
    Redis and S3 (moto) are killed with kill -9 and SIGTERM under load, and
    throwaway PostgreSQL and Redis servers are restarted under load; every run
    must complete once with an uninterrupted run's output, no finished step may
    run twice, no superseded worker may act. Strict: a store that cannot be
    reached fails. Arguments go to `python -m chaos`, e.g.
    `nox -s chaos -- sqlite --runs 100 --seed 7`.
    """
    install(session, CORE, *ADAPTERS.values())
    session.run("python", "-m", "pytest", "chaos/tests", "-q")
    session.run("python", "-m", "chaos", *session.posargs)


@nox.session
def fleet(session: nox.Session) -> None:
    """The fleet bench (bench/README.md; a developer's, not CI's): 10,000 one-step
    runs through 8 `outlast worker` processes on PostgreSQL, Redis and SQLite, and
    the same workload on a DBOS queue on the same PostgreSQL server (DBOS is
    installed here only). Needs the services of OUTLAST_TEST_POSTGRES_URL /
    OUTLAST_TEST_REDIS_URL; it creates and drops its own databases and key prefix.
    Arguments go to bench/fleet.py, e.g. `nox -s fleet -- postgres dbos --runs 2000`.
    """
    session.install("dbos>=3,<4")
    for package in (CORE, ADAPTERS["postgres"], ADAPTERS["redis"]):
        session.install("-e", package)
    session.run("python", "bench/fleet.py", *session.posargs)


BENCH_PEERS = [
    "langgraph>=1.1",  # 1.1 brought DeltaChannel, the opt-in delta channel the bench also runs
    "langgraph-checkpoint-postgres>=2",
    "dbos>=3,<4",
    "matplotlib>=3.8",
]


def with_extras(path: str, *wanted: str) -> str:
    """``path[extra,...]`` with those of ``wanted`` the distribution declares (maybe none)."""
    declared = tomllib.loads((Path(path) / "pyproject.toml").read_text())["project"]
    extras = [extra for extra in wanted if extra in declared.get("optional-dependencies", {})]
    return f"{path}[{','.join(extras)}]" if extras else path


@nox.session
def bench(session: nox.Session) -> None:
    """The comparison bench (bench/README.md; a developer's, not CI's): outlast's
    stores against the raw round-trip floor and against LangGraph's Postgres saver
    and DBOS, on a private PostgreSQL and Redis the bench starts from the installed
    server binaries. The peers are installed here only. Writes bench/results/.
    Arguments go to `python -m bench.harness`, e.g. `nox -s bench -- --quick`.
    """
    session.install(*BENCH_PEERS)
    for package in (
        with_extras(CORE, "fast"),
        with_extras(ADAPTERS["postgres"], "binary"),
        with_extras(ADAPTERS["redis"], "hiredis"),
    ):
        session.install("-e", package)
    session.run("python", "-m", "bench.harness", *session.posargs)


@nox.session
def standalone_conformance(session: nox.Session) -> None:
    """The conformance plugin from a directory outside the repo after a plain pip install."""
    session.run("bash", "conformance_tests/standalone_check.sh", external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every distribution's source."""
    install(session, *EVERYTHING)
    session.install("mypy", "boto3-stubs[s3]")
    session.run(
        "mypy",
        "core/src",
        "conformance_tests/src",
        *[f"{path}/src" for path in ADAPTERS.values()],
        "examples/jsondir/src",
        "plugins/opentelemetry/src",
        "chaos",
        *EXAMPLE_APPS,
    )


def build_wheels(session: nox.Session) -> Path:
    """Build every distribution's wheel into dist/, fresh; returns dist/'s absolute path."""
    wheelhouse = Path(WHEELHOUSE).resolve()
    wheelhouse.mkdir(exist_ok=True)
    for stale in wheelhouse.glob("outlast*.whl"):
        stale.unlink()  # a wheel of another version would still resolve
    # --no-deps: only outlast's own wheels; pip installs their dependencies from the index.
    session.run(
        "python",
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        str(wheelhouse),
        *EVERYTHING,
    )
    return wheelhouse


@nox.session
def wheels(session: nox.Session) -> None:
    """Build every distribution's wheel into dist/ (git-ignored). Nothing is on PyPI,
    so the extras resolve only from there: `pip install --find-links dist "outlast[postgres]"`
    (or [redis], [s3]; pip takes the other dependencies from the index)."""
    wheels = build_wheels(session)
    session.log(f"{len(list(wheels.glob('outlast*.whl')))} wheels in {wheels}")


@nox.session
def installed(session: nox.Session) -> None:
    """The README's install lines, not editable, each in a fresh virtualenv outside the repo:
    the folders named in one command (`pip install ./core ./adapters/postgres`), and the
    extras from the wheels `nox -s wheels` builds (`pip install --find-links dist
    "outlast[postgres,redis,s3]"`). `outlast backends` must list every backend installed,
    and outlast must import from the virtualenv, not from the checkout.
    """
    repo = Path.cwd()
    wheelhouse = build_wheels(session)
    installs = {
        "folders": ([str(repo / "core"), str(repo / "adapters/postgres")], {"sqlite", "postgres"}),
        "extras": (
            ["--find-links", str(wheelhouse), "outlast[postgres,redis,s3]"],
            {"sqlite", "postgres", "redis", "s3"},
        ),
    }
    with tempfile.TemporaryDirectory() as scratch:
        session.chdir(scratch)
        for name, (requirements, expected) in installs.items():
            bin_dir = Path(scratch) / name / "bin"
            session.run("python", "-m", "venv", str(bin_dir.parent))
            session.run(str(bin_dir / "pip"), "install", "--quiet", *requirements, external=True)
            listed = session.run(str(bin_dir / "outlast"), "backends", external=True, silent=True)
            # A backend's line: its name, then its URL schemes.
            names = {line.split()[0] for line in str(listed).splitlines() if "://" in line}
            if not expected <= names:
                session.error(f"{name}: outlast backends lists {sorted(names)}, not {expected}")
            where = session.run(
                str(bin_dir / "python"),
                "-c",
                "import outlast; print(outlast.__file__)",
                external=True,
                silent=True,
            )
            if str(where).strip().startswith(str(repo)):
                session.error(f"{name}: outlast was imported from the checkout ({where})")
            session.log(f"{name}: {' '.join(requirements)} -> backends {sorted(names)}")
