"""``python -m bench``: run every benchmark, each beside its baseline, and print the table.

Sizes are chosen so the whole run stays well under ten minutes on a 2-core machine;
``--quick`` shrinks them for a smoke run (the figures are then not the documented ones).
``--markdown FILE`` also writes the results section of ``docs/benchmarks.md``.
PostgreSQL parts use ``CROHOOKS_BENCH_POSTGRES_URL`` (default: the local server, user
postgres), create their own databases and drop them; when the server can't be reached
they are reported as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench import api, backlog, delivery, latency, ping, portal
from bench.common import (
    BenchError,
    Row,
    machine,
    median,
    percentile,
    postgres_database,
    postgres_problem,
    receiver,
    render_markdown,
    render_table,
)


@dataclass(frozen=True)
class Sizes:
    events: int
    hooks: int
    memory_events: int
    concurrency: int
    pings: int
    api_seconds: float
    backlog: int
    latency_rates: tuple[int, ...]
    latency_seconds: float
    ordered_events: int
    ordered_hooks: int
    portal_deliveries: int
    portal_requests: int


FULL = Sizes(
    events=1000,
    hooks=20,
    memory_events=5000,
    concurrency=64,
    pings=300,
    api_seconds=5.0,
    backlog=1_000_000,
    latency_rates=(25, 50, 100, 250, 500, 1000),
    latency_seconds=15.0,
    ordered_events=5000,
    ordered_hooks=4,
    portal_deliveries=100_000,
    portal_requests=100,
)
QUICK = Sizes(
    events=100,
    hooks=20,
    memory_events=200,
    concurrency=64,
    pings=50,
    api_seconds=2.0,
    backlog=20_000,
    latency_rates=(100, 250),
    latency_seconds=3.0,
    ordered_events=2000,
    ordered_hooks=2,
    portal_deliveries=10_000,
    portal_requests=20,
)


ORDERING_KEYS = 1000
ORDERED_PER_HOOK_INFLIGHT = 16
"""With a few hooks, the default cap (4) would bound both runs alike and hide the keys."""


def _fmt(value: float, unit: str = "", digits: int = 0) -> str:
    return f"{value:,.{digits}f}{unit}"


class Runner:
    def __init__(self, sizes: Sizes, workdir: Path, only: set[str] | None) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.only = only
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.pg_problem = postgres_problem()
        if self.pg_problem:
            print(f"PostgreSQL is unreachable ({self.pg_problem}): its parts are skipped.")

    def wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    async def step(self, title: str, action: Callable[[], Awaitable[None]]) -> None:
        started = time.perf_counter()
        print(f"- {title} ...", flush=True)
        try:
            await action()
        except BenchError as error:
            self.rows.append(Row(title, "failed", "", str(error).splitlines()[0][:60], "", False))
            print(f"  FAILED: {error}", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)

    def skipped(self, title: str) -> None:
        self.rows.append(Row(title, "skipped", "", "PostgreSQL unreachable", "", None))

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- 1. delivery throughput and 5. memory ------------------------------------------

    async def deliveries(self) -> None:
        sizes = self.sizes
        count = sizes.events * sizes.hooks
        workdir = self.subdir("delivery")
        async with receiver(workdir) as target:
            raw: list[delivery.BaselineFigures] = []

            async def base() -> None:
                raw.append(
                    await delivery.baseline(
                        target, workdir, count=count, concurrency=sizes.concurrency
                    )
                )
                print(f"  baseline: {raw[-1].per_second:,.0f} deliveries/s", flush=True)

            await self.step("baseline: raw aiohttp client", base)
            if not raw:
                return
            limit = raw[0].per_second
            self.notes.append(
                f"baseline: machine CPU {raw[0].cpu_ms_per_delivery:.2f} ms a delivery "
                "(client and receiver; the client's start-up included)"
            )
            configurations: list[tuple[str, str, int]] = [("SQLite, 1 process", "sqlite", 0)]
            configurations += [
                ("PostgreSQL, 1 worker", "postgresql", 1),
                ("PostgreSQL, 2 workers", "postgresql", 2),
            ]
            for label, dialect, workers in configurations:
                title = f"delivery throughput, {label}"
                if dialect == "postgresql" and self.pg_problem:
                    self.skipped(title)
                    continue

                async def run(
                    label: str = label, dialect: str = dialect, workers: int = workers
                ) -> None:
                    with self._database(dialect, f"throughput-{workers}") as url:
                        figures = await delivery.crohooks(
                            target, workdir, url, events=sizes.events, hooks=sizes.hooks,
                            workers=workers,
                        )  # fmt: skip
                    ratio = figures.per_second / limit
                    self.rows.append(
                        Row(
                            f"1. delivery throughput, {label}",
                            f"{figures.per_second:,.0f}/s",
                            f"{limit:,.0f}/s",
                            f"ratio {ratio:.2f}",
                            ">= 0.50",
                            ratio >= 0.5,
                        )
                    )
                    self.notes.append(
                        f"delivery {label}: {figures.deliveries:,} deliveries "
                        f"({sizes.events:,} events x {sizes.hooks} hooks) in "
                        f"{figures.seconds:.1f} s, of which intake {figures.intake_seconds:.1f} s; "
                        f"{figures.received:,} requests received "
                        f"({figures.received - figures.unique} duplicates); machine CPU "
                        f"{figures.cpu_ms_per_delivery:.2f} ms a delivery"
                    )
                    print(f"  {figures.per_second:,.0f} deliveries/s, ratio {ratio:.2f}")

                await self.step(title, run)
            await self.step("worker memory", lambda: self._memory(target, workdir))

    # -- 1b. the cost of payload filters ------------------------------------------------

    async def filters(self) -> None:
        """SQLite, one process, with and without a payload filter on every hook, run in
        turn (twice each) against the same receiver: the ratio of the best runs."""
        sizes = self.sizes
        workdir = self.subdir("filters")
        async with receiver(workdir) as target:
            best: dict[bool, float] = {}

            async def run() -> None:
                for number, filtered in enumerate((False, True, False, True)):
                    kind = "filters" if filtered else "plain"
                    with self._database("sqlite", f"filters-{number}") as url:
                        figures = await delivery.crohooks(
                            target, workdir, url, events=sizes.events, hooks=sizes.hooks,
                            workers=0, filtered=filtered,
                        )  # fmt: skip
                    best[filtered] = max(best.get(filtered, 0.0), figures.per_second)
                    print(f"  {kind}: {figures.per_second:,.0f} deliveries/s", flush=True)
                ratio = best[True] / best[False]
                self.rows.append(
                    Row(
                        "1b. delivery with a filter on every hook, SQLite",
                        f"{best[True]:,.0f}/s",
                        f"{best[False]:,.0f}/s",
                        f"ratio {ratio:.2f}",
                        ">= 0.90",
                        ratio >= 0.9,
                    )
                )
                self.notes.append(
                    f"filters: every one of {sizes.hooks} hooks filters with its own CEL "
                    f"expression ({delivery.FILTER} && <id> > 0); best of two runs each"
                )

            await self.step("delivery with payload filters", run)

    async def _memory(self, target: receiver, workdir: Path) -> None:  # type: ignore[valid-type]
        sizes = self.sizes
        dialect = "sqlite" if self.pg_problem else "postgresql"
        with self._database(dialect, "memory") as url:
            figures = await delivery.crohooks(
                target, workdir, url, events=sizes.memory_events, hooks=sizes.hooks, workers=1,
                measure_rss=True,
            )  # fmt: skip
        assert figures.rss_start_mib is not None
        assert figures.rss_end_mib is not None
        growth = figures.rss_end_mib - figures.rss_start_mib
        where = "PostgreSQL" if dialect == "postgresql" else "SQLite"
        self.rows.append(
            Row(
                f"5. worker RSS, {figures.deliveries:,} deliveries ({where})",
                f"{figures.rss_end_mib:.0f} MiB after",
                f"{figures.rss_start_mib:.0f} MiB at start",
                f"growth {growth:+.1f} MiB",
                "< 50 MB",
                growth < 50,
            )
        )
        self.notes.append(
            f"memory run: {figures.deliveries:,} deliveries through one `crohooks worker` in "
            f"{figures.seconds:.1f} s ({figures.per_second:,.0f}/s)"
        )
        print(f"  RSS {figures.rss_start_mib:.0f} -> {figures.rss_end_mib:.0f} MiB")

    @contextlib.contextmanager
    def _database(self, dialect: str, name: str):  # type: ignore[no-untyped-def]
        if dialect == "postgresql":
            with postgres_database(f"crohooks_bench_{name.replace('-', '_')}") as url:
                yield url
        else:
            yield f"sqlite:///{self.subdir(name)}/crohooks.db"

    # -- 2. ping -----------------------------------------------------------------------

    async def pings(self) -> None:
        workdir = self.subdir("ping")
        async with receiver(workdir) as target:
            for label, dialect in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
                title = f"ping overhead, {label}"
                if dialect == "postgresql" and self.pg_problem:
                    self.skipped(title)
                    continue

                async def run(label: str = label, dialect: str = dialect) -> None:
                    with self._database(dialect, f"ping-{dialect}") as url:
                        figures = await ping.measure(
                            target, self.subdir(f"ping-{dialect}"), url,
                            requests=self.sizes.pings,
                        )  # fmt: skip
                    p50, p99 = figures.p50_overhead_ms, figures.p99_overhead_ms
                    self.rows.append(
                        Row(
                            f"2. ping overhead, {label}",
                            f"p50 {median(figures.ping_ms):.2f} / "
                            f"p99 {percentile(figures.ping_ms, 0.99):.2f} ms",
                            f"p50 {median(figures.direct_ms):.2f} / "
                            f"p99 {percentile(figures.direct_ms, 0.99):.2f} ms",
                            f"+{p50:.2f} ms p50, +{p99:.2f} ms p99",
                            "p50 <= 3 ms",
                            p50 <= 3.0,
                        )
                    )
                    print(f"  overhead p50 {p50:.2f} ms, p99 {p99:.2f} ms")

                await self.step(title, run)

    # -- 3. API ------------------------------------------------------------------------

    async def api(self) -> None:
        for label, dialect in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
            title = f"API requests/s, {label}"
            if dialect == "postgresql" and self.pg_problem:
                self.skipped(title)
                continue

            async def run(label: str = label, dialect: str = dialect) -> None:
                with self._database(dialect, f"api-{dialect}") as url:
                    figures = await api.measure(
                        self.subdir(f"api-{dialect}"), url, seconds=self.sizes.api_seconds
                    )
                self.rows.append(
                    Row(
                        f"3. API GET /hooks/{{id}}, {label}",
                        f"{figures.hook_rps:,.0f} req/s",
                        f"{figures.bare_rps:,.0f} req/s",
                        f"ratio {figures.ratio:.2f}",
                        ">= 0.60",
                        figures.ratio >= 0.6,
                    )
                )
                self.notes.append(
                    f"API load generator: {figures.driver}, {api.CONNECTIONS} connections"
                )
                print(f"  {figures.hook_rps:,.0f} vs {figures.bare_rps:,.0f} req/s")

            await self.step(title, run)

    # -- 7. ordered delivery (issue 15) -------------------------------------------------

    async def ordered(self) -> None:
        """Throughput with 1,000 ordering keys against the same deliveries unkeyed, one
        right after the other on the same set-up: each (hook, key) has several updates,
        which must go one at a time."""
        sizes = self.sizes
        workdir = self.subdir("ordered")
        setups = (("SQLite, 1 process", "sqlite", 0), ("PostgreSQL, 1 worker", "postgresql", 1))
        async with receiver(workdir) as target:
            for label, dialect, workers in setups:
                title = f"ordered delivery, {ORDERING_KEYS:,} keys, {label}"
                if dialect == "postgresql" and self.pg_problem:
                    self.skipped(title)
                    continue

                async def run(
                    label: str = label, dialect: str = dialect, workers: int = workers
                ) -> None:
                    figures = {}
                    for keys in (None, ORDERING_KEYS):
                        with self._database(dialect, f"ordered-{dialect}-{keys}") as url:
                            figures[keys] = await delivery.crohooks(
                                target, workdir, url, events=sizes.ordered_events,
                                hooks=sizes.ordered_hooks, workers=workers, keys=keys,
                                per_hook_inflight=ORDERED_PER_HOOK_INFLIGHT,
                            )  # fmt: skip
                    unordered, ordered = figures[None], figures[ORDERING_KEYS]
                    ratio = ordered.per_second / unordered.per_second
                    self.rows.append(
                        Row(
                            f"7. ordered delivery, {ORDERING_KEYS:,} keys, {label}",
                            f"{ordered.per_second:,.0f}/s",
                            f"{unordered.per_second:,.0f}/s unordered",
                            f"ratio {ratio:.2f}",
                            ">= 0.90",
                            ratio >= 0.9,
                        )
                    )
                    self.notes.append(
                        f"ordered {label}: {ordered.deliveries:,} deliveries "
                        f"({sizes.ordered_events:,} events x {sizes.ordered_hooks} hooks, "
                        f"{sizes.ordered_events // ORDERING_KEYS} per hook and key) in "
                        f"{ordered.seconds:.1f} s (intake {ordered.intake_seconds:.1f} s), "
                        f"unordered in {unordered.seconds:.1f} s "
                        f"(intake {unordered.intake_seconds:.1f} s); "
                        f"{ORDERED_PER_HOOK_INFLIGHT} in flight per hook"
                    )
                    print(f"  {ordered.per_second:,.0f}/s vs {unordered.per_second:,.0f}/s")

                await self.step(title, run)

    # -- 4. backlog --------------------------------------------------------------------

    async def backlog(self) -> None:
        for label, dialect in (("PostgreSQL", "postgresql"), ("SQLite", "sqlite")):
            title = f"claim latency, {label}"
            if dialect == "postgresql" and self.pg_problem:
                self.skipped(title)
                continue

            async def run(label: str = label, dialect: str = dialect) -> None:
                empty_rows = (backlog.ROUNDS + 1) * backlog.LIMIT
                with self._database(dialect, f"claim-empty-{dialect}") as url:
                    empty = await backlog.measure(url, rows=empty_rows)
                with self._database(dialect, f"claim-full-{dialect}") as url:
                    full = await backlog.measure(url, rows=self.sizes.backlog)
                with self._database(dialect, f"claim-keyed-{dialect}") as url:
                    keyed = await backlog.measure(
                        url, rows=self.sizes.backlog, keys=backlog.ORDERING_KEYS
                    )
                keyed_factor = keyed.p50_ms / empty.p50_ms
                self.rows.append(
                    Row(
                        f"4. claim latency, {keyed.rows:,} queued over "
                        f"{backlog.ORDERING_KEYS:,} ordering keys ({label})",
                        f"p50 {keyed.p50_ms:.1f} / p99 {keyed.p99_ms:.1f} ms",
                        f"p50 {empty.p50_ms:.1f} / p99 {empty.p99_ms:.1f} ms",
                        f"x{keyed_factor:.2f}",
                        "<= x2",
                        keyed_factor <= 2.0,
                    )
                )
                factor = full.p50_ms / empty.p50_ms
                self.rows.append(
                    Row(
                        f"4. claim latency, {full.rows:,} due ({label})",
                        f"p50 {full.p50_ms:.1f} / p99 {full.p99_ms:.1f} ms",
                        f"p50 {empty.p50_ms:.1f} / p99 {empty.p99_ms:.1f} ms",
                        f"x{factor:.2f}",
                        "<= x2",
                        factor <= 2.0,
                    )
                )
                self.notes.append(
                    f"claim {label}: {full.rows:,} rows inserted in {full.insert_seconds:.1f} s; "
                    f"empty queue held {empty.rows:,}; {backlog.ROUNDS} claims of "
                    f"{backlog.LIMIT} each"
                )
                print(f"  p50 {full.p50_ms:.1f} ms vs {empty.p50_ms:.1f} ms empty (x{factor:.2f})")

            await self.step(title, run)

    # -- 6. single-event latency (issue 17) -------------------------------------------

    async def latency(self) -> None:
        workdir = self.subdir("latency")
        setups = (("SQLite", "sqlite", 0, 1000), ("PostgreSQL, 1 worker", "postgresql", 1, 600))
        async with receiver(workdir) as target:
            for label, dialect, workers, target_rate in setups:
                for hooks in (1, 20):
                    title = f"latency, {label}, {hooks} hook{'s' if hooks > 1 else ''}"
                    if dialect == "postgresql" and self.pg_problem:
                        self.skipped(title)
                        continue

                    async def run(
                        title: str = title, dialect: str = dialect, workers: int = workers,
                        hooks: int = hooks, target_rate: int = target_rate,
                    ) -> None:  # fmt: skip
                        with self._database(dialect, f"latency-{dialect}-{hooks}") as url:
                            figures = await latency.measure(
                                target, self.subdir(f"latency-{dialect}-{hooks}"), url,
                                hooks=hooks, workers=workers, rates=self.sizes.latency_rates,
                                seconds=self.sizes.latency_seconds,
                            )  # fmt: skip
                        sustained = [f for f in figures if f.sustained]
                        best = sustained[-1] if sustained else None
                        self.rows.append(
                            Row(
                                f"6. {title}",
                                f"{best.rate:,}/s" if best else "none",
                                "",
                                best.summary() if best else figures[0].summary(),
                                f">= {target_rate:,}/s at p99 <= {latency.P99_LIMIT_MS:.0f} ms",
                                best is not None and best.rate >= target_rate,
                            )
                        )
                        self.notes.extend(f"{title}: {f.detail()}" for f in figures)

                    await self.step(title, run)

    # -- 8. portal pages (issue 13) ---------------------------------------------------

    async def portal(self) -> None:
        for label, dialect in (("SQLite", "sqlite"), ("PostgreSQL", "postgresql")):
            title = f"portal pages, {label}"
            if dialect == "postgresql" and self.pg_problem:
                self.skipped(title)
                continue

            async def run(label: str = label, dialect: str = dialect) -> None:
                with self._database(dialect, f"portal-{dialect}") as url:
                    figures = await portal.measure(
                        self.subdir(f"portal-{dialect}"), url,
                        deliveries=self.sizes.portal_deliveries,
                        requests=self.sizes.portal_requests,
                    )  # fmt: skip
                worst = max(figures.log_p95, figures.hook_p95)
                self.rows.append(
                    Row(
                        f"8. portal pages, {figures.deliveries:,} deliveries ({label})",
                        f"log p95 {figures.log_p95:.1f} / hook p95 {figures.hook_p95:.1f} ms",
                        f"API log p95 {figures.api_p95:.1f} ms",
                        f"x{worst / figures.api_p95:.2f}",
                        "p95 <= 100 ms",
                        worst <= 100.0,
                    )
                )
                self.notes.append(
                    f"portal {label}: {figures.deliveries:,} deliveries written in "
                    f"{figures.insert_seconds:.1f} s; {len(figures.log_ms)} requests a page, "
                    "one at a time, in process (server time)"
                )
                print(
                    f"  log p95 {figures.log_p95:.1f} ms, hook p95 {figures.hook_p95:.1f} ms, "
                    f"API p95 {figures.api_p95:.1f} ms"
                )

            await self.step(title, run)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=["delivery", "filters", "ping", "api", "backlog", "latency", "ordered", "portal"],
        help="run only these (repeatable)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    print(
        f"crohooks benchmarks, {when}: {info['cpus']} CPUs ({info['cpu']}), {info['ram']} RAM, "
        f"Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="crohooks-bench-"))
    runner = Runner(sizes, workdir, set(args.only) if args.only else None)

    async def everything() -> None:
        if runner.wanted("delivery"):
            await runner.deliveries()
        if runner.wanted("filters"):
            await runner.filters()
        if runner.wanted("ping"):
            await runner.pings()
        if runner.wanted("api"):
            await runner.api()
        if runner.wanted("backlog"):
            await runner.backlog()
        if runner.wanted("latency"):
            await runner.latency()
        if runner.wanted("ordered"):
            await runner.ordered()
        if runner.wanted("portal"):
            await runner.portal()

    try:
        uvloop.run(everything())
    finally:
        if not os.environ.get("CROHOOKS_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    table = render_table(runner.rows)
    print()
    print(table)
    print()
    notes = list(dict.fromkeys(runner.notes))
    for note in notes:
        print(f"* {note}")
    print(f"\ntotal time {elapsed:.0f} s")
    if args.markdown:
        lines = [
            f"Run on {when} with `make bench` ({'--quick' if args.quick else 'full sizes'}), "
            f"in {elapsed:.0f} s.",
            "",
            "| machine | |",
            "|---|---|",
            *(f"| {key} | {value} |" for key, value in info.items()),
            "",
            render_markdown(runner.rows),
            "",
            *(f"- {note}" for note in notes),
            "",
        ]
        args.markdown.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
