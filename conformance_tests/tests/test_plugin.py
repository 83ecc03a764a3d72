"""The plugin itself: declarations are checked, gaps are strict xfails, and no
test can be dropped silently. Each case runs pytest in a subprocess on a small
adapter test module (the memory store), as a third party would."""

from __future__ import annotations

import textwrap

import pytest

from outlast_conformance import ConformanceSuite

pytest_plugins = ["pytester"]

MEMORY_SUITE = """
import uuid

import pytest_asyncio

import outlast
from outlast_conformance import Capabilities, ConformanceSuite


class MemoryBase(ConformanceSuite):
    capabilities = Capabilities(multi_process=False)

    @pytest_asyncio.fixture
    async def factory(self):
        store = outlast.open(f"memory://plugin-{uuid.uuid4().hex}")
        yield store
        await store.close()

    async def reopen(self, factory):
        return outlast.open(f"memory://{factory.backend.name}")

    async def corrupt_record(self, factory, run_id, namespace):
        factory.backend.space.runs[(namespace, run_id)].record = "{not json"

    async def corrupt_message(self, factory, run_id, namespace):
        run = factory.backend.space.runs[(namespace, run_id)]
        run.segments[len(run.phases)][0] = "{not json"
"""


def marked_requiring(feature: str) -> list[str]:
    """The suite tests marked @pytest.mark.outlast_requires(feature)."""
    return [
        name
        for name in ConformanceSuite.test_names
        if any(
            mark.name == "outlast_requires" and feature in mark.args
            for mark in getattr(getattr(ConformanceSuite, name), "pytestmark", [])
        )
    ]


def write_suite(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_adapter=MEMORY_SUITE + textwrap.dedent(body))


def test_known_gap_that_fails_is_a_strict_xfail(pytester: pytest.Pytester) -> None:
    """A declared gap on a test the store fails shows as xfailed with its
    reason, and the session passes."""
    write_suite(
        pytester,
        """
        class TestNoCorruption(MemoryBase):
            capabilities = Capabilities(multi_process=False, known_gaps={
                "test_corrupt_record_load_raises_naming_the_run": "corrupt() is a no-op here",
            })

            async def corrupt_record(self, factory, run_id, namespace):
                pass
        """,
    )
    result = pytester.runpytest_subprocess("-k", "corrupt_record_load", "-rx")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "conformance tests: 1 known gap (strict xfail)",
            "*XFAIL*known gap: corrupt() is a no-op here*",
        ]
    )


def test_known_gap_that_passes_fails_the_session(pytester: pytest.Pytester) -> None:
    """A declared gap on a test that passes is XPASS(strict): the session
    fails, so stale declarations get removed."""
    write_suite(
        pytester,
        """
        class TestStaleGap(MemoryBase):
            capabilities = Capabilities(multi_process=False, known_gaps={
                "test_load_of_unknown_run_is_none": "we thought this was broken",
            })
        """,
    )
    result = pytester.runpytest_subprocess("-k", "load_of_unknown_run")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*"])


def test_unknown_gap_name_is_a_collection_error(pytester: pytest.Pytester) -> None:
    """A known gap naming no suite test (a typo) stops collection with the name."""
    write_suite(
        pytester,
        """
        class TestTypo(MemoryBase):
            capabilities = Capabilities(
                multi_process=False, known_gaps={"test_no_such_thing": "typo"}
            )
        """,
    )
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*known_gaps names unknown test(s) test_no_such_thing*"])


def test_unknown_capability_is_an_error(pytester: pytest.Pytester) -> None:
    """A capability Capabilities does not define fails at import of the module."""
    write_suite(
        pytester,
        """
        class TestBogus(MemoryBase):
            capabilities = Capabilities(telepathy=True)
        """,
    )
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unexpected keyword argument 'telepathy'*"])


def test_capabilities_must_be_typed(pytester: pytest.Pytester) -> None:
    """A loose dict instead of Capabilities is refused."""
    write_suite(
        pytester,
        """
        class TestLoose(MemoryBase):
            capabilities = {"durable": True}
        """,
    )
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*capabilities must be an outlast_conformance.Capabilities*"])


def test_overriding_a_suite_test_is_refused(pytester: pytest.Pytester) -> None:
    """Overriding a suite test (to drop it with `pass`) is a collection error
    telling the author to declare a known gap instead."""
    write_suite(
        pytester,
        """
        class TestCheat(MemoryBase):
            async def test_concurrent_claimers_exactly_one_wins(self, factory, namespace):
                pass
        """,
    )
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*overrides suite test(s)*declare it in capabilities.known_gaps*"])


def test_missing_feature_turns_its_tests_into_strict_xfails(pytester: pytest.Pytester) -> None:
    """durable=False: the tests that need durability run as strict xfails
    (they fail on a store that forgets), every other test still passes; so
    do the multi-process tests of a store that declares multi_process=False."""
    write_suite(
        pytester,
        """
        class TestForgetful(MemoryBase):
            capabilities = Capabilities(durable=False, multi_process=False)

            async def reopen(self, factory):
                return outlast.open("memory://")  # a new, empty store: not durable
        """,
    )
    result = pytester.runpytest_subprocess("-rx")
    outcomes = result.parseoutcomes()
    expected = len(marked_requiring("durable")) + len(marked_requiring("multi_process"))
    assert outcomes.get("xfailed") == expected > len(marked_requiring("durable")) > 0, outcomes
    assert "failed" not in outcomes and "skipped" not in outcomes, outcomes
    result.stdout.fnmatch_lines(["*XFAIL*store declares durable=False*"])


def test_missing_fixture_says_what_to_provide(pytester: pytest.Pytester) -> None:
    """A subclass without the factory fixture errors, saying what to define."""
    pytester.makepyfile(
        test_adapter="""
        from outlast_conformance import ConformanceSuite

        class TestEmpty(ConformanceSuite):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-k", "load_of_unknown_run")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*must define an async `factory` fixture*"])


def test_markers_are_registered_by_the_plugin(pytester: pytest.Pytester) -> None:
    """With --strict-markers and no conftest, the suite's markers are known,
    and `-m outlast_conformance` selects exactly the suite's tests."""
    write_suite(
        pytester,
        """
        class TestMemory(MemoryBase):
            def test_adapter_specific(self):
                \"\"\"An adapter's own extra test is not a conformance test.\"\"\"
        """,
    )
    markers = pytester.runpytest_subprocess("--markers")
    markers.stdout.fnmatch_lines(["*outlast_conformance:*", "*outlast_requires(feature):*"])
    selected = pytester.runpytest_subprocess(
        "--strict-markers", "-m", "not outlast_conformance", "-p", "no:cacheprovider"
    )
    selected.assert_outcomes(passed=1)


def test_skip_marker_on_a_suite_test_is_refused(pytester: pytest.Pytester) -> None:
    """Skipping the whole suite class with a marker is a usage error: a store
    declares known gaps instead, which still run."""
    write_suite(
        pytester,
        """
        import pytest

        @pytest.mark.skip(reason="not today")
        class TestLazy(MemoryBase):
            pass
        """,
    )
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*cannot carry @pytest.mark.skip*known_gaps*"])


def test_summary_reports_runtime_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory that skips (service down) is reported in the conformance
    summary, and --outlast-strict turns it into a failure."""
    monkeypatch.delenv("OUTLAST_TEST_STRICT", raising=False)  # CI sets it; this test needs a skip
    write_suite(
        pytester,
        """
        import pytest_asyncio
        from outlast_conformance.services import unavailable

        class TestDown(MemoryBase):
            @pytest_asyncio.fixture
            async def factory(self):
                unavailable("the test service is down")
                yield
        """,
    )
    result = pytester.runpytest_subprocess("-k", "load_of_unknown_run")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["conformance tests: 1 skipped", "*no conformance test is skipped*"]
    )
    strict = pytester.runpytest_subprocess("-k", "load_of_unknown_run", "--outlast-strict")
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*the test service is down*forbids skipping*"])


def test_every_suite_test_has_a_docstring() -> None:
    """Each conformance test says, in its docstring, what a store must do."""
    undocumented = sorted(
        name for name in ConformanceSuite.test_names if not getattr(ConformanceSuite, name).__doc__
    )
    assert undocumented == []
    assert len(ConformanceSuite.test_names) >= 80
