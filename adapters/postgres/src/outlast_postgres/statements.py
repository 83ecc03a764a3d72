"""Every SQL statement the store runs, composed once per schema.

Values are always parameters; the schema is quoted by :mod:`psycopg.sql`.
Times come from the server (``now()``), never from the client's clock.
Each statement is composed once per schema and kept as the bytes psycopg
sends (a :class:`~psycopg.sql.Composed` would be rendered again, its
identifiers escaped again, at every execution). The arrays a save appends
are sent in binary format (``%(messages)b``): each element is its length and
its bytes, where the text format is an array literal in which every quote
and backslash of every message is escaped (in Python, with psycopg's
pure-Python build) and parsed back by the server.

The statements mirror :mod:`outlast.transitions`, the run record's state
machine: each names the transition it applies.

The fenced writes (save, complete, fail, release, renew, wait) are ONE
statement each: a data-modifying CTE updates the run's row only while it is
the writer's incarnation, holds the writer's epoch and is running
(``transitions.owned``), and every other write of the statement is joined to
that update, so a fenced writer writes nothing. The statement returns whether
the row was owned, the run's ``cancel_requested`` after the write and, for
the LeaseLost message, the run's status, epoch and incarnation as the
statement saw them.

The exception is the most common write, a save of messages alone by a run
that holds its lease (``append_one``/``append_many``): it locks the run's row
``FOR SHARE`` while owned instead of updating it, and inserts the messages
with their ``saved_at``, so a save writes one row per message and nothing
else. A lock is enough to fence: a claim, delete, cancel or any other write of
the row waits for the save's commit (and then sees its messages in its next
statement), and a save that waited for one of them re-reads the row as
committed and finds it no longer owned. When the append finds the row not
owned, or without a lease, the checkpointer runs the general save, which
moves ``updated_at`` where the work list needs it and says why it refused.

The writes that make a run claimable (a send too) or finished also notify
the schema's channel (:mod:`outlast_postgres.notifications`) with the run's
namespace, from the same statement: ``pg_notify`` joined to the row the
statement changed, so a refused write notifies nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from outlast_postgres.notifications import channel_for
from outlast_postgres.records import RUN_COLUMNS


def _compose(text: str, schema: str) -> bytes:
    # Rendered without a connection: the identifiers and the channel's name
    # are ASCII (config._schema), so no connection's encoding can change them.
    return (
        sql.SQL(text.replace("{cols}", RUN_COLUMNS.format(r="r", messages="{messages}")))
        .format(
            runs=sql.Identifier(schema, "runs"),
            messages=sql.Identifier(schema, "messages"),
            phases=sql.Identifier(schema, "phases"),
            channel=sql.Literal(channel_for(schema)),
        )
        .as_bytes(None)
    )


# The saved progress of a run is read by two statements: its phase outputs
# as one array, beside the record (there are few), and the messages of its
# current segment (segment number == completed phases) as rows, one per
# message, in order, by a second statement of the same read (load: in a
# REPEATABLE READ transaction, so both see one snapshot; the claims: see
# _CLAIMED). Rows, not one array: the server builds and sends a transcript of
# 10,000 messages as rows in about a quarter of the time it takes to build it
# as an array, and the client reads them at least as fast. Both statements
# are pipelined: a transcript of any length still loads in one round trip.
_PHASES = """
    ARRAY(SELECT p.body FROM {phases} p
          WHERE p.namespace = r.namespace AND p.run_id = r.run_id ORDER BY p.seq)
"""

# The messages of run ``{run}``'s current segment, in order. The run is a
# value (a parameter, or a scalar subquery), not a column of a joined row, so
# the segment is computed once and the primary key yields the rows in order.
_SEGMENT = """
SELECT m.body FROM {{messages}} m
WHERE m.namespace = %(namespace)s AND m.run_id = {run}
  AND m.segment = (SELECT count(*) FROM {{phases}} c
                   WHERE c.namespace = %(namespace)s AND c.run_id = {run}){more}
ORDER BY m.seq
"""


def _segment(run: str, more: str = "") -> str:
    return _SEGMENT.format(run=run, more=more)


# transitions.begin: running, epoch 1, attempts 1, no crash, leased, a new
# incarnation (drawn by the caller). The primary key is the atomic "exists".
_BEGIN = """
INSERT INTO {runs} (namespace, run_id, kind, input, status, epoch, owner, lease_seconds,
                    lease_expires_at, attempts, crashes, incarnation, format_version)
VALUES (%(namespace)s, %(run_id)s, %(kind)s, %(input)s, 'running', 1, %(owner)s,
        %(lease)s::float8, now() + make_interval(secs => %(lease)s::float8), 1, 0,
        %(incarnation)s, %(version)s)
ON CONFLICT (namespace, run_id) DO NOTHING
RETURNING 1
"""

# transitions.submit: running but unowned (epoch 0, attempts 0, no owner, no
# lease), so claimable at once; the lease's length is kept for the first claim.
# Created or not (RunExists) is whether a row comes back.
_SUBMIT = """
WITH created AS (
    INSERT INTO {runs} (namespace, run_id, kind, input, status, epoch, owner, lease_seconds,
                        lease_expires_at, attempts, crashes, incarnation, format_version)
    VALUES (%(namespace)s, %(run_id)s, %(kind)s, %(input)s, 'running', 0, '', %(lease)s::float8,
            NULL, 0, 0, %(incarnation)s, %(version)s)
    ON CONFLICT (namespace, run_id) DO NOTHING
    RETURNING namespace
)
SELECT pg_notify({channel}, namespace) FROM created
"""

# transitions.owned, in SQL: the condition of every checkpointer write.
_OWNED = """
namespace = %(namespace)s AND run_id = %(run_id)s
AND incarnation = %(incarnation)s AND epoch = %(epoch)s AND status = 'running'
"""

# ``{written}`` is ``fenced``, or ``notified`` (one row per fenced row) for the
# writes that notify: a CTE that is only a SELECT runs only when referenced.
_FENCED = f"""
WITH fenced AS (
    UPDATE {{runs}} SET {{assignments}}
    WHERE {_OWNED}
    RETURNING namespace, run_id, cancel_requested
){{more}}
SELECT (SELECT count(*) FROM {{written}}), (SELECT bool_or(cancel_requested) FROM fenced),
       s.status, s.epoch, s.incarnation
FROM (VALUES (1)) AS one (n)
LEFT JOIN {{runs}} s ON s.namespace = %(namespace)s AND s.run_id = %(run_id)s
"""

# Why a fenced write was refused, when its own statement could not tell: the
# row as committed now (see PostgresCheckpointer).
_OWNERSHIP = """
SELECT status, epoch, incarnation FROM {runs}
WHERE namespace = %(namespace)s AND run_id = %(run_id)s
"""

# Upserts, not plain inserts: a save whose commit the client never heard of
# (connection lost) is retried with the same positions and must not fail.
# Most saves complete no phase: they run the statement without new_phases,
# which has less to plan, execute and send (save_messages).
_APPEND_PHASES = """,
new_phases AS (
    INSERT INTO {phases} (namespace, run_id, seq, body)
    SELECT f.namespace, f.run_id, %(first_phase)s::int + p.n::int - 1, p.body
    FROM fenced f, unnest(%(phases)b::text[]) WITH ORDINALITY AS p(body, n)
    ON CONFLICT (namespace, run_id, seq) DO UPDATE SET body = EXCLUDED.body
)"""

_APPEND_MESSAGES = """,
new_messages AS (
    INSERT INTO {messages} (namespace, run_id, segment, seq, body, saved_at)
    SELECT f.namespace, f.run_id, %(segment)s::int, %(first_message)s::int + m.n::int - 1, m.body,
           now()
    FROM fenced f, unnest(%(messages)b::text[]) WITH ORDINALITY AS m(body, n)
    ON CONFLICT (namespace, run_id, segment, seq)
    DO UPDATE SET body = EXCLUDED.body, saved_at = EXCLUDED.saved_at
)"""

# transitions.save of messages alone by a run that holds its lease: the
# row is locked while owned (see the module docstring), not updated; the
# record's updated_at moves through the messages' saved_at (records.RUN_COLUMNS).
# The lease condition leaves a released run to the general save, which moves
# the row's updated_at. A plain insert, not an upsert (a tenth cheaper here):
# the positions are new unless a save committed without its client hearing
# of it; that save's retry fails on the primary key, and the checkpointer
# runs the general save, whose upsert overwrites them with the same messages.
# Returns whether the row was owned and its cancel_requested.
# ``{messages_from}``: the one message, or the array's rows, and their source.
_APPEND = f"""
WITH fenced AS (
    SELECT namespace, run_id, cancel_requested FROM {{runs}}
    WHERE {_OWNED} AND lease_expires_at IS NOT NULL
    FOR SHARE
),
new_messages AS (
    INSERT INTO {{messages}} (namespace, run_id, segment, seq, body, saved_at)
    SELECT f.namespace, f.run_id, %(segment)s::int, {{messages_from}}
)
SELECT count(*), bool_or(cancel_requested) FROM fenced
"""

# One message as a text parameter: no array for the client to build and the
# server to take apart (most saves append one message: a reply, or a result).
_ONE_MESSAGE = "%(first_message)s::int, %(body)s::text, now()\n    FROM fenced f"

_MANY_MESSAGES = """%(first_message)s::int + m.n::int - 1, m.body, now()
    FROM fenced f, unnest(%(messages)b::text[]) WITH ORDINALITY AS m(body, n)"""

_CLEAR_PROGRESS = """,
cleared_messages AS (
    DELETE FROM {messages} m USING fenced f
    WHERE m.namespace = f.namespace AND m.run_id = f.run_id
),
cleared_phases AS (
    DELETE FROM {phases} p USING fenced f
    WHERE p.namespace = f.namespace AND p.run_id = f.run_id
)"""

_NOTIFY = """,
notified AS (
    SELECT pg_notify({channel}, f.namespace) FROM fenced f
)"""

# transitions.save: the record only moves its updated_at, read as the later of
# the columns updated_at and saved_at (records.RUN_COLUMNS). A save sets
# saved_at, which no index covers, and assigns updated_at its own value, so
# the row is updated in place (HOT: no index entry, no dead tuple for vacuum;
# see schema._SAVED_AT). The exception is a run without a lease (released, or
# sent its input, and saved by the checkpointer that held it): the work list
# orders it by updated_at, "when it became claimable", its last write, so that
# moves too (a save transitions allow, rare, and then not HOT).
_SAVED = """
saved_at = now(),
updated_at = CASE WHEN lease_expires_at IS NULL THEN now() ELSE updated_at END
"""

# transitions.is_interrupted: running, the lease released (NULL) or expired;
# or waiting, with a timeout (not NULL: a wait without one never ends) that
# passed. It implies the predicate of the index runs_claimable_order.
_INTERRUPTED_RUNS = """
r.namespace = %(namespace)s
AND ((r.status = 'running' AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= now()))
     OR (r.status = 'waiting' AND r.lease_expires_at <= now()))
"""

# transitions.interrupted_order: oldest first by when the run became claimable
# (its lease's expiry, or the release, its last write; a wait's timeout), ties
# by run id. The index runs_claimable_order serves it.
_INTERRUPTED_ORDER = "coalesce(r.lease_expires_at, r.updated_at), r.run_id"

# transitions.claim: running again; an expired lease (not NULL: not released)
# of a running run is a crash, a wait that timed out is not (nobody died).
# ``wait`` and ``delivery`` stay as they are. SET expressions read the row as
# it was before this UPDATE.
_TAKE_OVER = """
status = 'running', epoch = r.epoch + 1, attempts = r.attempts + 1,
crashes = r.crashes + (r.status = 'running' AND r.lease_expires_at IS NOT NULL)::int,
owner = %(owner)s,
lease_seconds = %(lease)s::float8,
lease_expires_at = now() + make_interval(secs => %(lease)s::float8), updated_at = now()
"""

# A damaged run the caller has already dealt with (quarantined, or of a newer
# format) is passed over, so it cannot use up a LIMIT.
_NOT_SKIPPED = "NOT (r.run_id = ANY(%(skip)s::text[]))"

_CLAIM = f"""
UPDATE {{runs}} AS r SET {_TAKE_OVER}
WHERE r.run_id = %(run_id)s AND {_INTERRUPTED_RUNS}
RETURNING {{cols}}
"""

# The oldest claimable run of one of the kinds. SKIP LOCKED: a row another
# worker is claiming right now is passed over, so concurrent workers take
# different runs instead of queueing on one row. The bound on the ordering
# expression holds for every claimable run the statement can see (a lease
# expired, a release or a submit committed, before the claim began); it lets
# the index scan stop at the first live lease, so a poll of an empty queue
# reads no live run.
_CLAIM_NEXT = f"""
WITH picked AS (
    SELECT r.namespace, r.run_id FROM {{runs}} r
    WHERE {_INTERRUPTED_RUNS} AND coalesce(r.lease_expires_at, r.updated_at) <= now()
      AND r.kind = ANY(%(kinds)s::text[]) AND r.format_version = %(version)s AND {_NOT_SKIPPED}
    ORDER BY {_INTERRUPTED_ORDER}
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE {{runs}} AS r SET {_TAKE_OVER}
FROM picked WHERE r.namespace = picked.namespace AND r.run_id = picked.run_id
RETURNING {{cols}}
"""

# Read in a second statement of the claim's transaction, never in the claim's
# own statement: a statement reads one snapshot, and a save the previous owner
# committed while the claim waited for the row lock is only visible to a later
# statement. The lease condition picks the rows this transaction just claimed
# (``now()`` is the transaction's start time) so a lost claim reads nothing;
# its coalesce() repeats it in the terms of runs_claimable_order, so that the
# index finds them. The messages are a third statement: as the claimed rows
# stay locked by this transaction until it ends, no save of theirs can commit
# in between, so the two read the same progress.
_CLAIMED_RUNS = """
r.namespace = %(namespace)s AND r.status = 'running' AND r.owner = %(owner)s
  AND r.lease_expires_at = now() + make_interval(secs => %(lease)s::float8)
  AND coalesce(r.lease_expires_at, r.updated_at) = now() + make_interval(secs => %(lease)s::float8)
"""

_CLAIMED = f"""
SELECT r.run_id, {_PHASES}
FROM {{runs}} r
WHERE {_CLAIMED_RUNS}
ORDER BY r.run_id
"""

# claim_next's messages: those of THE claimed run. The condition could match
# more than one run only if this owner claimed another with the same lease at
# the same instant (two transactions with one start time): then this reads
# nothing, and claim_next reads its run's messages by id (claimed_one_messages).
_CLAIMED_MESSAGES = f"""
WITH claimed AS (
    SELECT r.run_id FROM {{runs}} r WHERE {_CLAIMED_RUNS}
)""" + _segment("(SELECT CASE WHEN count(*) = 1 THEN min(run_id) END FROM claimed)")

# claim's, and claim_next's when it must: one run, known by its id.
_CLAIMED_ONE = f"""
SELECT r.run_id, {_PHASES}
FROM {{runs}} r
WHERE {_CLAIMED_RUNS} AND r.run_id = %(run_id)s
"""

_CLAIMED_ONE_MESSAGES = _segment(
    "%(run_id)s",
    f"""
  AND EXISTS (SELECT 1 FROM {{runs}} r WHERE {_CLAIMED_RUNS} AND r.run_id = %(run_id)s)""",
)

_LOAD = f"""
SELECT {{cols}}, {_PHASES}
FROM {{runs}} r WHERE r.namespace = %(namespace)s AND r.run_id = %(run_id)s
"""

_LOAD_MESSAGES = _segment("%(run_id)s")

# Records of a newer format version are not this store's to read: left out here.
_INTERRUPTED = f"""
SELECT {{cols}} FROM {{runs}} r
WHERE {_INTERRUPTED_RUNS} AND r.format_version = %(version)s AND {_NOT_SKIPPED}
ORDER BY {_INTERRUPTED_ORDER}
LIMIT %(limit)s
"""

# transitions.quarantine: only an interrupted run of this format version;
# failed, the epoch moved on (fencing any writer), the lease dropped; nothing
# else changes, so what is stored stays for forensics.
_QUARANTINE = f"""
WITH quarantined AS (
    UPDATE {{runs}} AS r
    SET status = 'failed', error = %(error)s, epoch = r.epoch + 1, lease_expires_at = NULL,
        updated_at = now()
    WHERE r.run_id = %(run_id)s AND r.format_version = %(version)s AND {_INTERRUPTED_RUNS}
    RETURNING r.namespace
)
SELECT pg_notify({{channel}}, namespace) FROM quarantined
"""

# transitions.cancel: a run nobody owns (waiting, or running with its lease
# released or expired) is failed at once, at the next epoch (fencing a late
# writer), without a lease; an owned one only gets the request. Every SET
# expression reads the row as the UPDATE locked it, so the choice and the
# write are one atomic step. The run's status as the statement's snapshot saw
# it tells, when nothing was updated, a missing run (NULL) from a finished one.
_UNOWNED = "(r.status = 'waiting' OR r.lease_expires_at IS NULL OR r.lease_expires_at <= now())"

_CANCEL = f"""
WITH cancelled AS (
    UPDATE {{runs}} AS r
    SET status = CASE WHEN {_UNOWNED} THEN 'failed' ELSE r.status END,
        error = CASE WHEN {_UNOWNED} THEN %(error)s ELSE r.error END,
        epoch = r.epoch + CASE WHEN {_UNOWNED} THEN 1 ELSE 0 END,
        lease_expires_at = CASE WHEN {_UNOWNED} THEN NULL ELSE r.lease_expires_at END,
        cancel_requested = true, updated_at = now()
    WHERE r.namespace = %(namespace)s AND r.run_id = %(run_id)s
      AND r.status IN ('running', 'waiting')
    RETURNING {{cols}}
),
notified AS (
    SELECT pg_notify({{channel}}, c.namespace) FROM cancelled c WHERE c.status = 'failed'
)
SELECT s.status, (SELECT count(*) FROM notified), c.*
FROM (VALUES (1)) AS one (n)
LEFT JOIN {{runs}} s ON s.namespace = %(namespace)s AND s.run_id = %(run_id)s
LEFT JOIN cancelled c ON true
"""

# transitions.send: only a waiting run; running with its lease released (so
# claimable at once, its claim no crash) and the delivery stored. Announced as
# a release is. Exactly one of concurrent senders updates the row: the others
# wait for its lock, then find it running. When nothing was updated, the
# run's status as the snapshot saw it tells why (see _CANCEL).
_SEND = """
WITH sent AS (
    UPDATE {runs} AS r
    SET status = 'running', delivery = %(delivery)s, lease_expires_at = NULL, updated_at = now()
    WHERE r.namespace = %(namespace)s AND r.run_id = %(run_id)s AND r.status = 'waiting'
    RETURNING {cols}
),
notified AS (
    SELECT pg_notify({channel}, d.namespace) FROM sent d
)
SELECT s.status, (SELECT count(*) FROM notified), d.*
FROM (VALUES (1)) AS one (n)
LEFT JOIN {runs} s ON s.namespace = %(namespace)s AND s.run_id = %(run_id)s
LEFT JOIN sent d ON true
"""

_LIST = """
SELECT {cols} FROM {runs} r
WHERE r.namespace = %(namespace)s AND r.format_version = %(version)s{filters}
ORDER BY r.run_id
LIMIT %(limit)s
"""

# list() composes only the conditions it uses, so a prepared (generic) plan
# still walks the primary key from the cursor instead of filtering a namespace.
_STATUS = " AND r.status = %(status)s"
_AFTER_CURSOR = " AND r.run_id > %(cursor)s"

_DELETE_RUN = """
DELETE FROM {runs} WHERE namespace = %(namespace)s AND run_id = %(run_id)s RETURNING 1
"""

# A second statement (see _CLAIMED): it must also see a save that committed
# while the run's row was being deleted.
_DELETE_PROGRESS = """
WITH m AS (DELETE FROM {messages} WHERE namespace = %(namespace)s AND run_id = %(run_id)s)
DELETE FROM {phases} WHERE namespace = %(namespace)s AND run_id = %(run_id)s
"""

# Only terminal runs (transitions.purgeable): no checkpointer can write to
# them any more, so one statement (one snapshot) sees all of their progress.
# Waiting runs are kept however long they wait. Written as "neither running
# nor waiting" so that it implies the predicate of the index runs_terminal.
_PURGE = """
WITH gone AS (
    DELETE FROM {runs}
    WHERE namespace = %(namespace)s AND status NOT IN ('running', 'waiting')
      AND updated_at < now() - make_interval(secs => %(older_than)s::float8)
    RETURNING namespace, run_id
),
m AS (DELETE FROM {messages} m USING gone g
      WHERE m.namespace = g.namespace AND m.run_id = g.run_id),
p AS (DELETE FROM {phases} p USING gone g
      WHERE p.namespace = g.namespace AND p.run_id = g.run_id)
SELECT count(*) FROM gone
"""


def _fenced(assignments: str, more: str = "", *, notify: bool = False) -> str:
    """A fenced write; ``notify``: also tell the channel (see the module docstring)."""
    return (
        _FENCED.replace("{assignments}", assignments)
        .replace("{more}", more + (_NOTIFY if notify else ""))
        .replace("{written}", "notified" if notify else "fenced")
    )


@dataclass(frozen=True, slots=True)
class Statements:
    """The store's statements for one schema."""

    begin: bytes
    submit: bytes
    save: bytes
    save_messages: bytes
    append_one: bytes
    append_many: bytes
    complete: bytes
    fail: bytes
    release: bytes
    renew: bytes
    wait: bytes
    ownership: bytes
    claim: bytes
    claim_next: bytes
    claimed: bytes
    claimed_messages: bytes
    claimed_one: bytes
    claimed_one_messages: bytes
    load: bytes
    load_messages: bytes
    interrupted: bytes
    quarantine: bytes
    cancel: bytes
    send: bytes
    list_all: bytes
    list_status: bytes
    list_after: bytes
    list_status_after: bytes
    delete_run: bytes
    delete_progress: bytes
    purge: bytes

    def listing(self, *, status: bool, cursor: bool) -> bytes:
        """The list statement filtering by status and/or cursor as asked."""
        if status:
            return self.list_status_after if cursor else self.list_status
        return self.list_after if cursor else self.list_all

    @classmethod
    def for_schema(cls, schema: str) -> Statements:
        def c(text: str) -> bytes:
            return _compose(text, schema)

        return cls(
            begin=c(_BEGIN),
            submit=c(_SUBMIT),
            save=c(_fenced(_SAVED, _APPEND_PHASES + _APPEND_MESSAGES)),
            save_messages=c(_fenced(_SAVED, _APPEND_MESSAGES)),
            append_one=c(_APPEND.replace("{messages_from}", _ONE_MESSAGE)),
            append_many=c(_APPEND.replace("{messages_from}", _MANY_MESSAGES)),
            complete=c(
                _fenced(
                    "status = 'completed', result = %(result)s, usage = %(usage)s, "
                    "lease_expires_at = NULL, updated_at = now()",
                    _CLEAR_PROGRESS,
                    notify=True,
                )
            ),
            fail=c(
                _fenced(
                    "status = 'failed', error = %(error)s, lease_expires_at = NULL, "
                    "updated_at = now()",
                    notify=True,
                )
            ),
            release=c(_fenced("lease_expires_at = NULL, updated_at = now()", notify=True)),
            renew=c(
                _fenced(
                    "lease_expires_at = now() + make_interval(secs => lease_seconds), "
                    "updated_at = now()"
                )
            ),
            # transitions.wait: no lease; the wait times out ``timeout`` seconds
            # from now (NULL, never, when it is NULL: make_interval is strict).
            # The epoch stays: not running any more fences this writer.
            wait=c(
                _fenced(
                    "status = 'waiting', wait = %(wait)s, delivery = NULL, "
                    "lease_expires_at = now() + make_interval(secs => %(timeout)s::float8), "
                    "updated_at = now()"
                )
            ),
            ownership=c(_OWNERSHIP),
            claim=c(_CLAIM),
            claim_next=c(_CLAIM_NEXT),
            claimed=c(_CLAIMED),
            claimed_messages=c(_CLAIMED_MESSAGES),
            claimed_one=c(_CLAIMED_ONE),
            claimed_one_messages=c(_CLAIMED_ONE_MESSAGES),
            load=c(_LOAD),
            load_messages=c(_LOAD_MESSAGES),
            interrupted=c(_INTERRUPTED),
            quarantine=c(_QUARANTINE),
            cancel=c(_CANCEL),
            send=c(_SEND),
            list_all=c(_LIST.replace("{filters}", "")),
            list_status=c(_LIST.replace("{filters}", _STATUS)),
            list_after=c(_LIST.replace("{filters}", _AFTER_CURSOR)),
            list_status_after=c(_LIST.replace("{filters}", _STATUS + _AFTER_CURSOR)),
            delete_run=c(_DELETE_RUN),
            delete_progress=c(_DELETE_PROGRESS),
            purge=c(_PURGE),
        )
