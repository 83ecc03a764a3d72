"""Listing, deletion and retention."""

from __future__ import annotations

import pytest

from outlast.adapter import CheckpointerFactory, RunStatus
from outlast_conformance.fixtures import StoreFixtures
from outlast_conformance.support import conversation, must_load, start, state, wait_for


class ListingTests(StoreFixtures):
    """list() filters and pages; delete() and purge() remove runs."""

    @pytest.mark.asyncio
    async def test_list_filters_by_status(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """list(status=...) returns exactly the runs in that status; without a
        status, all of them, with their records."""
        running = await factory.begin(start(namespace, kind="k-run"))
        done = await factory.begin(start(namespace))
        await done.complete({"r": 1})
        failed = await factory.begin(start(namespace))
        await failed.fail("bad")

        async def ids(status: RunStatus | None) -> set[str]:
            return {r.run_id for r in (await factory.list(namespace, status=status)).records}

        assert await ids(RunStatus.RUNNING) == {running.run_id}
        assert await ids(RunStatus.COMPLETED) == {done.run_id}
        assert await ids(RunStatus.FAILED) == {failed.run_id}
        assert await ids(None) == {running.run_id, done.run_id, failed.run_id}
        by_id = {r.run_id: r for r in (await factory.list(namespace)).records}
        assert by_id[done.run_id].result == {"r": 1}
        assert by_id[failed.run_id].error == "bad"
        assert by_id[running.run_id].kind == "k-run"

    @pytest.mark.asyncio
    async def test_list_paginates_in_run_id_order(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """Pages of ``limit`` records in run-id order; ``next_cursor`` leads to
        the next page and is None on the last: every run exactly once."""
        run_ids = [f"run-{i:02d}" for i in range(7)]
        for run_id in reversed(run_ids):
            await factory.begin(start(namespace, run_id=run_id))
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            page = await factory.list(namespace, limit=3, cursor=cursor)
            pages.append([r.run_id for r in page.records])
            cursor = page.next_cursor
            if cursor is None:
                break
            assert len(pages) < 10, "pagination does not end"
        assert pages == [run_ids[0:3], run_ids[3:6], run_ids[6:7]]

    @pytest.mark.asyncio
    async def test_list_of_exactly_full_page_ends(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """When the runs fit one page exactly, that page's ``next_cursor`` is
        None: a cursor is given only when a record follows the page."""
        for i in range(3):
            await factory.begin(start(namespace, run_id=f"r{i}"))
        page = await factory.list(namespace, limit=3)
        assert [r.run_id for r in page.records] == ["r0", "r1", "r2"]
        assert page.next_cursor is None, (
            f"an exactly full last page has next_cursor {page.next_cursor!r}; it must be None"
        )

    @pytest.mark.asyncio
    async def test_delete_removes_the_run(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """delete() returns True and the run is gone (load None, not listed,
        not interrupted); deleting again returns False; the id can be begun anew."""
        cp = await factory.begin(start(namespace))
        await cp.save(state(conversation(3)))
        await cp.release()
        assert await factory.delete(cp.run_id, namespace) is True
        assert await factory.load(cp.run_id, namespace) is None
        assert cp.run_id not in {r.run_id for r in (await factory.list(namespace)).records}
        assert cp.run_id not in {r.run_id for r in await factory.interrupted(namespace)}
        assert await factory.delete(cp.run_id, namespace) is False
        again = await factory.begin(start(namespace, run_id=cp.run_id))
        stored = await must_load(factory, again.run_id, namespace)
        assert (stored.record.epoch, stored.state.history) == (1, ())

    @pytest.mark.asyncio
    async def test_purge_removes_old_terminal_runs_and_keeps_running_ones(
        self, factory: CheckpointerFactory, namespace: str
    ) -> None:
        """purge(older_than) deletes completed and failed runs last updated
        longer ago than that, keeps recent ones, and never deletes a running
        (or released) run."""
        done = await factory.begin(start(namespace))
        await done.complete("x")
        failed = await factory.begin(start(namespace))
        await failed.fail("y")
        running = await factory.begin(start(namespace))
        released = await factory.begin(start(namespace))
        await released.release()
        assert await factory.purge(3600, namespace) == 0
        assert await factory.load(done.run_id, namespace) is not None
        removed = 0

        async def purged() -> bool:
            nonlocal removed
            removed += await factory.purge(0, namespace)
            return removed >= 2

        await wait_for(purged, within=self.capabilities.wait_timeout, what="purge(0) to remove")
        assert removed == 2
        assert await factory.load(done.run_id, namespace) is None
        assert await factory.load(failed.run_id, namespace) is None
        assert await factory.load(running.run_id, namespace) is not None
        assert await factory.load(released.run_id, namespace) is not None
