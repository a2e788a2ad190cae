"""The `taskservice dlq` and `taskservice tasks redrive` commands.

The Kafka and database modules are imported inside the functions that use them, so
`taskservice --help` loads neither client.

Exit codes: 0 on success, also when the dead-letter topic is empty or missing. 1 for an
invalid value or an unreachable server, with a message that names the value and the fix.
2 for a usage error. 3 when `dlq replay` could not replay some dead letters, each of
which is reported with its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

import orjson

from taskservice.config import Settings
from taskservice.errors import ServiceError
from taskservice.recovery.filters import (
    DEAD_LETTER_REASONS,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_REDRIVE_LIMIT,
    REPLAY_TARGETS,
    TIME_FORMAT_HINT,
    InvalidFilterError,
    check_limit,
    parse_reasons,
    parse_time_range,
)

if TYPE_CHECKING:
    from taskservice.recovery.dead_letters import DeadLetterSelection
    from taskservice.recovery.redrive import RedrivenTask, RedriveSelection

EXIT_REPLAY_INCOMPLETE = 3


def add_parsers(commands: Any) -> None:
    """Add the `dlq` and `tasks` commands to the CLI's subparsers."""
    dlq = commands.add_parser("dlq", help="list, show and replay dead-lettered records").add_subparsers(
        dest="action", required=True)

    listing = dlq.add_parser("list", help="print one line per dead letter: position, time, reason, source, detail")
    _add_selection_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")

    show = dlq.add_parser("show", help="print one dead letter in full: headers, key and value")
    show.add_argument("position", help="PARTITION:OFFSET as `dlq list` prints it, e.g. 0:42")
    _add_timeout_argument(show)

    replay = dlq.add_parser("replay", help="replay dead letters into their source topic or straight into tasks")
    replay.add_argument("--to", required=True, choices=REPLAY_TARGETS, dest="target",
                        help="source: publish key, value and headers again to the source topic for the running "
                             "ingest; matching: decode, match the dispatchers and insert the tasks here")
    _add_selection_arguments(replay)
    replay.add_argument("--dry-run", action="store_true", help="print what would happen and change nothing")
    replay.add_argument("--force", action="store_true",
                        help="with --to source: publish source records that were replayed before again")
    replay.add_argument("--json", action="store_true", help="print one JSON object per dead letter")

    tasks = commands.add_parser("tasks", help="act on tasks in bulk").add_subparsers(dest="action", required=True)
    redrive = tasks.add_parser("redrive", help="re-run failed tasks as new tasks, at most once per failed task")
    redrive.add_argument("--function", help="only tasks of this function")
    redrive.add_argument("--error", help="only tasks whose error name is this, e.g. Runtime.Timeout")
    redrive.add_argument("--since", help=f"only tasks that failed at or after this time: {TIME_FORMAT_HINT}")
    redrive.add_argument("--until", help="only tasks that failed before this time, in the same forms")
    redrive.add_argument("--limit", type=int, default=DEFAULT_REDRIVE_LIMIT,
                         help=f"maximum number of failed tasks to redrive, oldest failure first "
                              f"(default {DEFAULT_REDRIVE_LIMIT})")
    redrive.add_argument("--dry-run", action="store_true", help="list the failed tasks that would be redriven")
    redrive.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", action="append",
                        help=f"only this reason code; repeat or separate with commas ({', '.join(DEAD_LETTER_REASONS)})")
    parser.add_argument("--source-topic", action="append", help="only records from this topic; repeat for more")
    parser.add_argument("--since", help=f"only dead letters written at or after this time: {TIME_FORMAT_HINT}")
    parser.add_argument("--until", help="only dead letters written before this time, in the same forms")
    parser.add_argument("--limit", type=int, help="maximum number of dead letters, in partition and offset order")
    _add_timeout_argument(parser)


def _add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=DEFAULT_READ_TIMEOUT_S,
                        help="seconds to wait for the broker to return records before giving up "
                             f"(default {DEFAULT_READ_TIMEOUT_S:.0f})")


def _selection_of(args: argparse.Namespace) -> DeadLetterSelection:
    from taskservice.recovery.dead_letters import DeadLetterSelection

    since, until = parse_time_range(args.since, args.until)
    topics = frozenset(topic for value in args.source_topic or () for topic in value.split(",") if topic)
    check_limit(args.limit, "--limit")
    return DeadLetterSelection(reasons=parse_reasons(args.reason), source_topics=topics or None,
                               since=since, until=until)


def _check_timeout(args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        raise InvalidFilterError(f"--timeout must be a positive number of seconds (got {args.timeout})")


def run_dlq_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `dlq` action; return the exit code."""
    _check_timeout(args)
    if args.action == "show":
        from taskservice.recovery.dead_letters import parse_position

        partition, offset = parse_position(args.position)
        return asyncio.run(_show(settings, partition, offset, args.timeout))
    selection = _selection_of(args)
    if args.action == "list":
        return asyncio.run(_list(settings, selection, args))
    return asyncio.run(_replay(settings, selection, args))


async def _list(settings: Settings, selection: DeadLetterSelection, args: argparse.Namespace) -> int:
    from taskservice.recovery.dead_letters import (
        DeadLetterReader,
        DeadLetterTopicMissingError,
        summary_json,
        summary_line,
    )

    printed = 0
    try:
        async with DeadLetterReader(settings, args.timeout) as reader:
            async for letter in reader.read(selection, args.limit):
                print(orjson.dumps(summary_json(letter)).decode() if args.json else summary_line(letter))
                printed += 1
    except DeadLetterTopicMissingError as exc:
        print(f"taskservice: {exc}", file=sys.stderr)
        return 0
    if printed == 0:
        print(f"taskservice: no dead letters in {settings.dead_letter_topic!r} match", file=sys.stderr)
    return 0


async def _show(settings: Settings, partition: int, offset: int, timeout_s: float) -> int:
    from taskservice.recovery.dead_letters import DeadLetterReader, full_text

    async with DeadLetterReader(settings, timeout_s) as reader:
        letter = await reader.read_one(partition, offset)
    print(full_text(letter))
    return 0


async def _replay(settings: Settings, selection: DeadLetterSelection, args: argparse.Namespace) -> int:
    from taskservice.recovery.dead_letters import DeadLetterTopicMissingError
    from taskservice.recovery.replay import ReplayOutcome, replay_dead_letters

    if args.force and args.target != "source":
        raise InvalidFilterError("--force applies to --to source only; --to matching never creates a task twice")

    def report(outcome: ReplayOutcome) -> None:
        print(orjson.dumps(outcome.as_json()).decode() if args.json else outcome.line())

    try:
        counts = await replay_dead_letters(settings, selection, args.limit, args.target, report,
                                           dry_run=args.dry_run, force=args.force, timeout_s=args.timeout)
    except DeadLetterTopicMissingError as exc:
        print(f"taskservice: {exc}", file=sys.stderr)
        return 0
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())) or "no dead letters match"
    print(f"replay to {args.target}{' (dry run)' if args.dry_run else ''}: {summary}",
          file=sys.stderr if args.json else sys.stdout)
    return EXIT_REPLAY_INCOMPLETE if counts["failed"] else 0


def run_tasks_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `tasks` action; return the exit code."""
    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL")
    from taskservice.recovery.redrive import RedriveSelection, check_error_name

    since, until = parse_time_range(args.since, args.until)
    selection = RedriveSelection(function_name=args.function, error_name=check_error_name(args.error),
                                 since=since, until=until)
    limit = check_limit(args.limit, "--limit")
    assert limit is not None
    redriven = asyncio.run(_redrive(settings, selection, limit, args.dry_run))
    if args.json:
        print(orjson.dumps({"affectedRecords": len(redriven), "dryRun": args.dry_run,
                            "data": [task.as_json() for task in redriven]}).decode())
        return 0
    for task in redriven:
        target = "(dry run)" if task.task_id is None else f"-> {task.task_id}"
        print(f"{task.failed_task_id} {target}  {task.function_name}  {task.error_name or '-'}  "
              f"failed {task.as_json()['failedTimestamp']}")
    verb = "would redrive" if args.dry_run else "redrove"
    print(f"{verb} {len(redriven)} failed task(s)")
    return 0


async def _redrive(settings: Settings, selection: RedriveSelection, limit: int, dry_run: bool) -> list[RedrivenTask]:
    from taskservice.recovery.redrive import redrive_failed_tasks
    from taskservice.store.db import create_pool
    from taskservice.store.recovery_repository import RecoveryRepository

    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, size=2, role="recovery")
    try:
        return await redrive_failed_tasks(RecoveryRepository(pool), selection, limit, dry_run=dry_run,
                                          requested_by="cli")
    finally:
        await pool.close()


COMMANDS = {"dlq": run_dlq_command, "tasks": run_tasks_command}
