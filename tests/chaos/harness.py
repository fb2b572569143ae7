"""The chaos suite's harness: a deployment on a throwaway PostgreSQL cluster, a client that
writes every answer down, a receiver that counts deliveries, and a scenario's checks and
figures.

A scenario (``chaos_run``) starts real ``crohooks serve --no-worker`` and ``crohooks
worker`` processes (tests/e2e/processes.py) on a fresh database of the throwaway cluster,
with hooks pointing at a real loopback receiver, and publishes events over HTTP, each
with an idempotency key, as a platform's backend would. Then the test breaks something.
Afterwards ``settle_and_check`` publishes again, with the same keys, whatever never got
its 202, gives the queue ``SETTLE_WITHIN`` to drain, and checks what the receiver saw,
what the database holds, every answer the API gave, and what the processes logged.
Problems are collected, not raised one by one, so a failing run still prints all of its
figures; ``conclude`` records the figures and fails the test with every problem found.

The settings are short so that everything settles in seconds: each database step is
bounded by ``DATABASE_TIMEOUT`` (2 s), retries come after 0.2, 0.5 and 1 s, a dead
worker's leases expire after 3 s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.chaos.cluster import ThrowawayCluster
from tests.e2e.processes import (
    Api,
    Crohooks,
    Publisher,
    Worker,
    api_headers,
    api_server,
    mint_token,
    process_env,
    worker,
)
from tests.support.receiver import ReceivedRequest, Receiver, Reply

ROUNDS = max(1, int(os.environ.get("CROHOOKS_CHAOS_ROUNDS") or "1"))
"""How many times each scenario repeats its disruption (a soak: ``CROHOOKS_CHAOS_ROUNDS=20``)."""
SEED = int(os.environ.get("CROHOOKS_CHAOS_SEED") or secrets.randbelow(2**32))
"""Chooses the kill moments and victims; printed, and replayed with ``CROHOOKS_CHAOS_SEED``."""

DATABASE_TIMEOUT = 2.0
READINESS_TIMEOUT = 1.0
ANSWER_MARGIN = 1.5
"""What an answer may take beyond its database bound: the process's own work and the
scheduling of a shared two-core machine."""
ANSWER_WITHIN = DATABASE_TIMEOUT + ANSWER_MARGIN
"""The client gives up on every request after this: a later answer counts as a hang."""
RETRY_AFTER_SECONDS = 1
IDLE_CHECK_SECONDS = 1.0
ATTEMPT_TIMEOUT = 1.5
LEASE_SECONDS = 3.0
HOOKS = 4
PER_HOOK_INFLIGHT = 4
CONCURRENCY = 8
HANG_SECONDS = 10.0
"""How long a hanging receiver stalls: longer than any attempt timeout here."""
RECEIVER_SECONDS = 0.02
"""How long the receiver takes to answer: deliveries stay in flight long enough for a
disruption to catch some of them."""
RECOVER_WITHIN = 3.0
"""After the database is back, every API answer must be a success again this soon."""
SETTLE_WITHIN = 30.0
EVENT = "Job"

UNAVAILABLE = "database unavailable"
AVAILABLE_AGAIN = "database available again"
ERROR_BODY_KEYS = {"detail", "explanation", "field"}


def chaos_settings(**overrides: str | float) -> dict[str, str | float]:
    """The processes' ``CROHOOKS_*`` settings: short bounds so every scenario settles fast."""
    settings: dict[str, str | float] = {
        "database_connect_timeout": DATABASE_TIMEOUT,
        "database_timeout": DATABASE_TIMEOUT,
        "database_pool_timeout": DATABASE_TIMEOUT,
        "database_idle_check_seconds": IDLE_CHECK_SECONDS,
        "database_retry_after_seconds": RETRY_AFTER_SECONDS,
        "readiness_timeout": READINESS_TIMEOUT,
        "retry_schedule": "0.2,0.5,1",
        "attempt_timeout": ATTEMPT_TIMEOUT,
        "lease_seconds": LEASE_SECONDS,
        "poll_interval": 0.2,
        "per_hook_inflight": PER_HOOK_INFLIGHT,
    }
    settings.update(overrides)
    return settings


@dataclass(frozen=True)
class ChaosDatabase:
    """A fresh, migrated database on the throwaway cluster."""

    cluster: ThrowawayCluster
    name: str

    @property
    def url(self) -> str:
        return self.cluster.url(self.name)

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Read it as an operator would: one short-lived connection, without blocking the
        loop (the client keeps publishing meanwhile)."""
        conninfo = self.cluster.conninfo(self.name)
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=10, row_factory=dict_row
        ) as conn:
            cursor = await conn.execute(sql.encode(), params)
            return await cursor.fetchall()


# -- the processes -------------------------------------------------------------------------


class Deployment:
    """The crohooks processes of a scenario: API processes and workers, killed and replaced
    at will. Every process started stays listed (its log is checked at the end)."""

    def __init__(self, env: Mapping[str, str], logdir: Path, stack: AsyncExitStack) -> None:
        self.env = env
        self.logdir = logdir
        self._stack = stack
        self.apis: list[Api] = []
        """The API processes running now."""
        self.workers: list[Worker] = []
        """The workers running now."""
        self.started: list[Crohooks] = []
        self.worker_ids: dict[str, str] = {}
        """Process name → the worker id it leases deliveries under."""
        self.killed_at: dict[str, float] = {}
        """Name of each API process killed → when it was gone."""
        self._names = Counter[str]()

    def _name(self, kind: str) -> str:
        self._names[kind] += 1
        return f"{kind}-{self._names[kind]}"

    async def add_apis(self, count: int) -> list[Api]:
        """Start ``count`` API processes at once and wait until they answer."""
        new = [
            await self._stack.enter_async_context(
                api_server(self._name("api"), env=self.env, logdir=self.logdir)
            )
            for _ in range(count)
        ]
        self.started += [api.process for api in new]
        await asyncio.gather(*(api.ready() for api in new))
        self.apis += new
        return new

    async def add_workers(self, count: int) -> list[Worker]:
        """Start ``count`` workers at once and wait until they have started."""
        new = [
            await self._stack.enter_async_context(
                worker(
                    self._name("worker"), env=self.env, logdir=self.logdir, concurrency=CONCURRENCY
                )
            )
            for _ in range(count)
        ]
        self.started += [w.process for w in new]
        ids = await asyncio.gather(*(w.ready() for w in new))
        self.worker_ids.update(
            (w.process.name, worker_id) for w, worker_id in zip(new, ids, strict=True)
        )
        self.workers += new
        return new

    async def kill_api(self, api: Api) -> None:
        self.apis.remove(api)
        await api.process.kill()
        self.killed_at[api.process.name] = time.monotonic()

    async def kill_worker(self, victim: Worker) -> str:
        """SIGKILL a worker; the id its leases are held under."""
        self.workers.remove(victim)
        await victim.process.kill()
        return self.worker_ids[victim.process.name]

    async def stop(self) -> None:
        """SIGTERM every process: workers first (they finish and record what is in flight)."""
        for running in self.workers:
            await running.stop()
        for api in self.apis:
            await api.stop()

    def log_tails(self) -> str:
        return "\n".join(process.log_tail() for process in self.started)


# -- the receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    delivery_id: str
    event_id: str
    hook_id: int
    path: str
    at: float
    """``time.monotonic()`` when it arrived."""
    reply: Reply

    @property
    def answered_ok(self) -> bool:
        reply = self.reply
        return 200 <= reply.status < 300 and not reply.reset and reply.delay < HANG_SECONDS


Behaviour = Callable[[str, int], Reply]
"""What the receiver answers to the ``n``-th arrival (from 1) of a delivery on a path."""


def healthy(_path: str, _nth: int) -> Reply:
    return Reply(200, delay=RECEIVER_SECONDS)


class Sink:
    """The hooks' receiver: every delivery that arrived, when, and how it was answered."""

    def __init__(self, receiver: Receiver, behaviour: Behaviour) -> None:
        self.arrivals: dict[str, list[Arrival]] = defaultdict(list)
        self._behaviour = behaviour
        self._changed = asyncio.Event()
        receiver.respond_with(self._answer)

    def _answer(self, request: ReceivedRequest) -> Reply:
        body = json.loads(request.body)
        delivery_id = body["delivery_id"]
        path = request.path.strip("/")
        reply = self._behaviour(path, len(self.arrivals[delivery_id]) + 1)
        self.arrivals[delivery_id].append(
            Arrival(
                delivery_id, body["event_id"], body["hook_id"], path, request.received_at, reply
            )
        )
        self._changed.set()
        return reply

    @property
    def total(self) -> int:
        return sum(len(arrivals) for arrivals in self.arrivals.values())

    def delivered(self) -> set[tuple[str, int]]:
        """(event id, hook id) of every delivery the receiver answered with a 2xx."""
        return {
            (a.event_id, a.hook_id)
            for arrivals in self.arrivals.values()
            for a in arrivals
            if a.answered_ok
        }

    def duplicates(self) -> dict[str, int]:
        """Delivery id → how many more times it was answered 2xx after the first."""
        extra = {
            delivery_id: sum(a.answered_ok for a in arrivals) - 1
            for delivery_id, arrivals in self.arrivals.items()
        }
        return {delivery_id: n for delivery_id, n in extra.items() if n > 0}

    async def wait_for(self, total: int, timeout: float) -> None:
        """Until ``total`` arrivals have come in (bounded; ``TimeoutError`` after)."""
        async with asyncio.timeout(timeout):
            while self.total < total:
                self._changed.clear()
                await self._changed.wait()


# -- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request to an API process and what came of it."""

    kind: str
    """``publish``, ``list`` or ``ready``."""
    api: str
    """The API process's name."""
    sent_at: float
    seconds: float
    status: int | None
    """``None``: no answer (see ``problem``)."""
    problem: str | None = None
    retry_after: str | None = None
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        outcome = self.status if self.status is not None else self.problem
        text = json.dumps(self.body)[:160] if self.body is not None else ""
        return f"{self.kind} to {self.api} after {self.seconds:.2f} s: {outcome} {text}".rstrip()


class Client:
    """Talks to the API processes as the platform's backend would, and writes every answer
    down: which events were accepted (202), which publishes are still unanswered."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self._http = http
        self._headers = api_headers(token)
        self._numbers = itertools.count(1)
        self.answers: list[Answer] = []
        self.accepted: dict[str, int] = {}
        """Event id → the hook count of its 202."""
        self.unanswered: dict[str, dict[str, Any]] = {}
        """Idempotency key → the event, for every publish that has had no 202 yet."""

    def new_events(self, count: int) -> list[dict[str, Any]]:
        events = []
        for _ in range(count):
            n = next(self._numbers)
            events.append({"event": EVENT, "data": {"n": n}, "idempotency_key": f"chaos-{n}"})
        return events

    async def publish(self, api: Api, events: Sequence[dict[str, Any]]) -> Answer:
        for event in events:
            self.unanswered[event["idempotency_key"]] = event
        if len(events) == 1:
            answer = await self._request("publish", api, "POST", "/events", events[0])
            results = [answer.body] if answer.status == 202 else []
        else:
            answer = await self._request(
                "publish", api, "POST", "/events/batch", {"events": list(events)}
            )
            results = answer.body["results"] if answer.status == 202 else []
        for event, result in zip(events, results, strict=False):
            self.accepted[result["event_id"]] = result["hook_count"]
            del self.unanswered[event["idempotency_key"]]
        return answer

    async def list_hooks(self, api: Api) -> Answer:
        return await self._request("list", api, "GET", "/hooks")

    async def readiness(self, api: Api) -> Answer:
        return await self._request("ready", api, "GET", "/readyz")

    async def _request(
        self, kind: str, api: Api, method: str, path: str, body: Any = None
    ) -> Answer:
        sent_at = time.monotonic()
        status: int | None = None
        problem = retry_after = parsed = None
        try:
            async with asyncio.timeout(ANSWER_WITHIN):
                response = await self._http.request(
                    method, api.base_url + path, headers=self._headers, json=body
                )
        except TimeoutError:
            problem = f"no answer within {ANSWER_WITHIN:g} s"
        except httpx.TransportError as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            status = response.status_code
            retry_after = response.headers.get("Retry-After")
            with suppress(ValueError):
                parsed = response.json()
        answer = Answer(
            kind,
            api.process.name,
            sent_at,
            time.monotonic() - sent_at,
            status,
            problem,
            retry_after,
            parsed,
        )
        self.answers.append(answer)
        return answer

    async def republish_unanswered(self, apis: Callable[[], Sequence[Api]], within: float) -> None:
        """Publish again, with their own keys, the events that never got a 202, until each
        has: a retry of an event the database did commit gets that event's id back."""
        deadline = time.monotonic() + within
        while self.unanswered and time.monotonic() < deadline:
            batch = list(self.unanswered.values())[:100]
            answer = await self.publish(apis()[0], batch)
            if answer.status != 202:
                await asyncio.sleep(0.2)


async def publish_continuously(
    client: Client, apis: Callable[[], Sequence[Api]], stop: asyncio.Event, rng: random.Random
) -> None:
    """Batches of 1 to 10 events to a random API process, four times a second, until
    ``stop``: about as many deliveries as the workers send on a shared two-core machine."""
    while not stop.is_set():
        running = apis()
        if running:
            await client.publish(rng.choice(running), client.new_events(rng.randint(1, 10)))
        await asyncio.sleep(0.25)


async def probe(
    client: Client, apis: Callable[[], Sequence[Api]], stop: asyncio.Event, start: int
) -> None:
    """Publish one event, list the hooks, ask for readiness: in turn, over every API
    process, until ``stop``."""
    kinds = itertools.cycle(("publish", "list", "ready"))
    for _ in range(start):
        next(kinds)
    while not stop.is_set():
        for api in list(apis()):
            kind = next(kinds)
            if kind == "publish":
                await client.publish(api, client.new_events(1))
            elif kind == "list":
                await client.list_hooks(api)
            else:
                await client.readiness(api)
        await asyncio.sleep(0.05)


# -- a scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """When the database was out, as the test saw it."""

    kind: str
    began: float
    """The database was (or may have been) out from here ..."""
    back: float
    """... and was certainly serving again from here."""
    certain: tuple[float, float] | None = None
    """A window in which it was certainly out (stopped, frozen, read-only), if there is
    one: every answer to a request of a kind in ``refused`` made and answered inside it
    must be a 503. A restart has none: nobody outside knows when the server went and when
    it came back."""
    refused: frozenset[str] = frozenset({"publish", "list", "ready"})


@dataclass
class Figures:
    scenario: str
    seed: int = SEED
    rounds: int = ROUNDS
    seconds: float = 0.0
    accepted: int = 0
    """Events answered 202."""
    deliveries: int = 0
    """Deliveries those events owed (one per event and subscribed hook)."""
    arrivals: int = 0
    lost: int = 0
    duplicates: int = 0
    duplicate_bound: int = 0
    stuck: int = 0
    answers: int = 0
    outage_answers: int = 0
    """Answers to requests made while the database was (or may have been) out."""
    max_outage_answer: float = 0.0
    """The slowest of those, in seconds."""
    max_ready_answer: float = 0.0
    disruptions: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.scenario}: {self.seconds:.0f} s, rounds {self.rounds}, "
            f"accepted {self.accepted}, deliveries {self.deliveries}, "
            f"arrivals {self.arrivals}, lost {self.lost}, "
            f"duplicates {self.duplicates} (bound {self.duplicate_bound}), stuck {self.stuck}, "
            f"answers {self.answers} ({self.outage_answers} during outages, slowest "
            f"{self.max_outage_answer:.2f} s; slowest /readyz {self.max_ready_answer:.2f} s)"
        )


FIGURES: list[Figures] = []
"""Every scenario's figures in this session, printed in pytest's terminal summary."""


@dataclass
class Run:
    """A scenario under way: its processes, client, receiver, and what has gone wrong."""

    database: ChaosDatabase
    deployment: Deployment
    client: Client
    sink: Sink
    hook_ids: list[int]
    figures: Figures
    started_at: float = field(default_factory=time.monotonic)
    outages: list[Outage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def running_apis(self) -> list[Api]:
        return self.deployment.apis

    def note(self, disruption: str) -> None:
        """Write a disruption down (printed with the figures, and on failure)."""
        self.figures.disruptions.append(disruption)
        print(f"chaos {self.figures.scenario}: {disruption}")

    async def publish_load(self, events: int, batch: int = 25) -> None:
        """Publish ``events`` while everything is healthy; each batch must be accepted."""
        for first in range(0, events, batch):
            api = self.deployment.apis[first // batch % len(self.deployment.apis)]
            answer = await self.client.publish(
                api, self.client.new_events(min(batch, events - first))
            )
            assert answer.status == 202, answer.describe()

    @asynccontextmanager
    async def probing(self, loops: int = 3) -> AsyncIterator[None]:
        """Probe every API process from ``loops`` concurrent loops while inside."""
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(probe(self.client, self.running_apis, stop, start))
            for start in range(loops)
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    async def leased(self, worker_id: str | None = None) -> set[str]:
        """The deliveries leased now (by ``worker_id``, or by anyone)."""
        rows = await self.database.rows(
            "SELECT id FROM deliveries WHERE status = 'pending' AND leased_by IS NOT NULL"
            " AND (%(worker)s::text IS NULL OR leased_by = %(worker)s::text)",
            worker=worker_id,
        )
        return {row["id"] for row in rows}

    async def settle_and_check(
        self, *, duplicate_bound: int, outages_logged: int | None = None
    ) -> None:
        """Republish what got no 202, let the queue drain, stop the processes, check.

        ``outages_logged``: how many times each process must log the database going away
        and coming back (``None``: at most once per outage, and always in pairs).
        """
        await self.client.republish_unanswered(self.running_apis, within=SETTLE_WITHIN / 2)
        for key in self.client.unanswered:
            self.problems.append(f"publish of {key} never got its 202")
        expected = {(event_id, hook) for event_id in self.client.accepted for hook in self.hook_ids}
        deadline = time.monotonic() + SETTLE_WITHIN
        pending = await self._pending()
        while (pending or not expected <= self.sink.delivered()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            pending = await self._pending()
        try:
            await self.deployment.stop()
        except (AssertionError, pytest.fail.Exception) as error:
            self.problems.append(f"a process did not stop cleanly: {error}")

        self._check_deliveries(expected, pending)
        if pending:
            await self._describe_stuck()
        await self._check_database()
        self._check_duplicates(duplicate_bound)
        self._check_answers()
        self._check_logs(outages_logged)

    async def _pending(self) -> int:
        rows = await self.database.rows(
            "SELECT count(*) AS n FROM deliveries WHERE status = 'pending'"
        )
        return int(rows[0]["n"])

    def _check_deliveries(self, expected: set[tuple[str, int]], stuck: int) -> None:
        lost = expected - self.sink.delivered()
        figures = self.figures
        figures.accepted = len(self.client.accepted)
        figures.deliveries = len(expected)
        figures.arrivals = self.sink.total
        figures.lost = len(lost)
        figures.stuck = stuck
        wrong_counts = {e: n for e, n in self.client.accepted.items() if n != len(self.hook_ids)}
        if wrong_counts:
            self.problems.append(
                f"202s with a hook count other than {len(self.hook_ids)}: {wrong_counts}"
            )
        if lost:
            self.problems.append(
                f"{len(lost)} accepted deliveries never reached the receiver with a 2xx "
                f"(event id, hook id): {sorted(lost)[:10]}"
            )
        if stuck:
            self.problems.append(f"{stuck} deliveries still pending after {SETTLE_WITHIN:g} s")

    async def _describe_stuck(self) -> None:
        rows = await self.database.rows(
            "SELECT attempts, leased_by IS NOT NULL AS leased,"
            " lease_expires_at < now() AT TIME ZONE 'UTC' AS lease_expired,"
            " next_attempt_at < now() AT TIME ZONE 'UTC' AS due,"
            " count(*) AS n FROM deliveries WHERE status = 'pending' GROUP BY 1, 2, 3, 4"
        )
        self.problems.append(f"the deliveries still pending: {rows}")

    async def _check_database(self) -> None:
        rows = await self.database.rows("SELECT id, event_id, status FROM deliveries")
        per_event = Counter(row["event_id"] for row in rows)
        short = {e: per_event[e] for e, n in self.client.accepted.items() if per_event[e] != n}
        if short:
            self.problems.append(
                f"{len(short)} accepted events lack deliveries in the database: "
                f"{list(short.items())[:10]}"
            )
        statuses = Counter(row["status"] for row in rows)
        if set(statuses) - {"succeeded", "pending"}:
            self.problems.append(f"deliveries by status: {dict(statuses)}")
        events = await self.database.rows("SELECT id FROM events")
        phantoms = {row["id"] for row in events} - set(self.client.accepted)
        if phantoms:
            self.problems.append(
                f"{len(phantoms)} events in the database were never acknowledged with a 202, "
                f"even to a retry with their idempotency key: {sorted(phantoms)[:10]}"
            )

    def _check_duplicates(self, bound: int) -> None:
        duplicates = self.sink.duplicates()
        self.figures.duplicates = sum(duplicates.values())
        self.figures.duplicate_bound = bound
        if self.figures.duplicates > bound:
            self.problems.append(
                f"{self.figures.duplicates} duplicate deliveries, more than the bound {bound}: "
                f"{list(duplicates.items())[:10]}"
            )

    def _check_answers(self) -> None:
        figures = self.figures
        figures.answers = len(self.client.answers)
        during = []
        for answer in self.client.answers:
            outage = self._outage_of(answer)
            if outage is not None or answer.status == 503:
                during.append(answer)
            problem = self._judge(answer, outage)
            if problem is not None:
                self.problems.append(f"{problem}: {answer.describe()}")
        figures.outage_answers = len(during)
        figures.max_outage_answer = max((a.seconds for a in during), default=0.0)
        figures.max_ready_answer = max(
            (a.seconds for a in self.client.answers if a.kind == "ready"), default=0.0
        )

    def _outage_of(self, answer: Answer) -> Outage | None:
        """The outage the request was made in (or right after, before recovery was due)."""
        for outage in self.outages:
            if (
                outage.began <= answer.sent_at + answer.seconds
                and answer.sent_at <= outage.back + RECOVER_WITHIN
            ):
                return outage
        return None

    def _judge(self, answer: Answer, outage: Outage | None) -> str | None:
        if answer.status is None:
            killed_at = self.deployment.killed_at.get(answer.api)
            if killed_at is not None and answer.sent_at <= killed_at:
                return None  # the process was killed under it
            return "no answer"
        bound = READINESS_TIMEOUT if answer.kind == "ready" else DATABASE_TIMEOUT
        if answer.seconds > bound + ANSWER_MARGIN:
            return f"slower than {bound:g} s + {ANSWER_MARGIN:g} s"
        inside = (
            outage is not None
            and outage.certain is not None
            and answer.kind in outage.refused
            and outage.certain[0] <= answer.sent_at
            and answer.sent_at + answer.seconds <= outage.certain[1]
        )
        if answer.ok:
            return "a success while the database was out" if inside else None
        if answer.status != 503:
            return f"{answer.status}: neither a success nor a 503"
        if outage is None:
            return "503 while the database was up"
        if answer.sent_at > outage.back + RECOVER_WITHIN:
            return f"503 more than {RECOVER_WITHIN:g} s after the database was back"
        if answer.retry_after is None:
            return "503 without Retry-After"
        if not isinstance(answer.body, dict) or set(answer.body) != ERROR_BODY_KEYS:
            return "503 without CRO's error body"
        return None

    def _check_logs(self, outages_logged: int | None) -> None:
        for process in self.deployment.started:
            records = process.log_lines()
            raw = process.log.read_text(errors="replace")
            tracebacks = [r.get("event") for r in records if "exception" in r or "exc_info" in r]
            if tracebacks or "Traceback (most recent call last)" in raw:
                self.problems.append(
                    f"{process.name} logged tracebacks ({tracebacks[:5]}):\n{process.log_tail()}"
                )
            said = [r for r in records if r.get("event") in (UNAVAILABLE, AVAILABLE_AGAIN)]
            events = [r["event"] for r in said]
            pairs = len(events) // 2
            in_pairs = events == [UNAVAILABLE, AVAILABLE_AGAIN] * pairs
            if outages_logged is not None:
                expected = f"{outages_logged} pair(s)"
                wrong = events != [UNAVAILABLE, AVAILABLE_AGAIN] * outages_logged
            else:
                expected = f"at most {len(self.outages)} pair(s), one per outage"
                wrong = not in_pairs or pairs > len(self.outages)
            if wrong:
                shown = [(r["event"], r.get("reason"), r["timestamp"][11:23]) for r in said[:6]]
                self.problems.append(
                    f"{process.name} logged {events.count(UNAVAILABLE)} {UNAVAILABLE!r} and "
                    f"{events.count(AVAILABLE_AGAIN)} {AVAILABLE_AGAIN!r}, expected {expected}; "
                    f"the first: {shown}"
                )

    def conclude(self) -> None:
        """Record the figures; fail with every problem found."""
        self.figures.seconds = time.monotonic() - self.started_at
        FIGURES.append(self.figures)
        print(self.figures.line())
        if self.problems:
            shown = "\n".join(f"- {p}" for p in self.problems[:40])
            pytest.fail(
                f"{len(self.problems)} problem(s) (CROHOOKS_CHAOS_SEED={SEED} replays the "
                f"choices):\n{shown}\n{self.figures.line()}\n"
                f"disruptions: {self.figures.disruptions}\n{self.deployment.log_tails()}"
            )


@asynccontextmanager
async def chaos_run(
    scenario: str,
    database: ChaosDatabase,
    logdir: Path,
    *,
    apis: int,
    workers: int,
    behaviour: Behaviour = healthy,
    hook_paths: Sequence[str] = tuple(f"hook-{n}" for n in range(HOOKS)),
    keep_alive: bool = False,
    **settings: str | float,
) -> AsyncIterator[Run]:
    """Start a scenario: the processes, the receiver and one hook per path, all subscribed
    to ``EVENT``; everything is killed on the way out.

    The client opens a connection per request unless ``keep_alive``: a kept-alive
    connection that the server closes for idleness at the very moment the client reuses
    it fails without an answer, HTTP keep-alive's own race, not crohooks'. The idle
    scenario keeps connections alive on purpose, with gaps far from the server's timeout.
    """
    env = process_env(database.url, **chaos_settings(**settings))
    limits = httpx.Limits(max_keepalive_connections=None if keep_alive else 0)
    async with (
        Receiver() as receiver,
        AsyncExitStack() as stack,
        httpx.AsyncClient(trust_env=False, timeout=ANSWER_WITHIN, limits=limits) as http,
    ):
        sink = Sink(receiver, behaviour)
        deployment = Deployment(env, logdir, stack)
        token, _, _ = await asyncio.gather(
            mint_token(env, logdir), deployment.add_apis(apis), deployment.add_workers(workers)
        )
        publisher = Publisher(http, token)
        hook_ids = [
            await publisher.create_hook(
                deployment.apis[0].base_url, receiver.url_for(f"/{path}"), [EVENT]
            )
            for path in hook_paths
        ]
        yield Run(database, deployment, Client(http, token), sink, hook_ids, Figures(scenario))
