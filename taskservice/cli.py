"""The `taskservice` command line: dev, run, migrate, functions, dispatchers, schedules, users,
tokens, clients, events, dlq, tasks, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from taskservice.config import Settings, load_settings
from taskservice.errors import ServiceError
from taskservice.logs import configure_logging
from taskservice.auth.cli import COMMANDS as AUTH_COMMANDS
from taskservice.auth.cli import add_parsers as add_auth_parsers
from taskservice.recovery.commands import COMMANDS as RECOVERY_COMMANDS
from taskservice.recovery.commands import add_parsers as add_recovery_parsers
from taskservice.scheduler.commands import add_schedules_parser

logger = logging.getLogger("taskservice")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskservice", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $TASKSERVICE_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("dev", help="run every role in one process; embedded servers when none are configured")
    run = commands.add_parser("run", help="run the given roles against the configured servers")
    run.add_argument("--role", action="append", required=True,
                     help="ingest, worker, relay, sweeper, scheduler or http; repeat or separate with commas")
    commands.add_parser("migrate", help="apply pending database migrations")

    functions = commands.add_parser("functions", help="manage functions").add_subparsers(dest="action", required=True)
    sync = functions.add_parser("sync", help="register every function folder (with function.toml) under DIR")
    sync.add_argument("dir", nargs="?", type=Path, help="folder of function folders (default: functions_dir)")

    dispatchers = commands.add_parser("dispatchers", help="manage dispatchers").add_subparsers(
        dest="action", required=True)
    create = dispatchers.add_parser("create", help="create a dispatcher with one task action")
    create.add_argument("--event-type", required=True, help="event type to react to, e.g. user_deleted")
    create.add_argument("--function", required=True, help="function the task action runs")
    create.add_argument("--name", help="unique dispatcher name")
    create.add_argument("--data", default="{}", help="task data as a JSON object (default {})")
    create.add_argument("--tags", default="", help="comma-separated task tags")
    create.add_argument("--filter", help="event pattern the event must match, as JSON (see docs/filters.md)")
    create.add_argument("--transition", help="for document.transitioned: JSON such as '{\"toStatus\": \"analyzed\"}'")
    create.add_argument("--input", help="input mapping as JSON, e.g. '{\"userId.$\": \"$.data.userId\"}'")
    create.add_argument("--no-event", dest="include_event", action="store_false", default=None,
                        help="leave the event out of the task data")
    create.add_argument("--deduplication-key", help="key template: one task per key value, e.g. $.data.documentId")
    create.add_argument("--concurrency-key", help="key template: tasks with the same key run one at a time")
    create.add_argument("--delay", type=float, help="start the task this many seconds after the event time")
    create.add_argument("--priority", type=int, help="task priority (default: the function's)")

    add_schedules_parser(commands)
    add_auth_parsers(commands)

    events = commands.add_parser("events", help="publish events").add_subparsers(dest="action", required=True)
    publish = events.add_parser("publish", help="publish each line of a JSON Lines file as one record")
    publish.add_argument("file", type=Path, help="JSON Lines file; '-' reads standard input")
    publish.add_argument("--topic", required=True, help="topic to publish to")
    publish.add_argument("--raw", action="store_true", help="publish lines that are not valid JSON too")

    add_recovery_parsers(commands)

    demo = commands.add_parser("demo", help="replay the blood-pressure dataset through the whole pipeline")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    demo.add_argument("--limit", type=int, default=1000, help="measurements to replay (default 1000)")
    demo.add_argument("--rate", type=float, default=250.0, help="events published per second (default 250)")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for results (default 120)")
    return parser


async def _run_service(settings: Settings, roles: tuple[str, ...]) -> None:
    from taskservice.service import Service

    service = Service(settings, roles)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, service.stop)
    await service.run()


async def _prepare(settings: Settings, *, sync_functions: bool) -> None:
    from taskservice.admin import register_functions
    from taskservice.store.migrate import migrate

    assert settings.database_url is not None
    await migrate(settings.database_url)
    if sync_functions and settings.functions_dir.is_dir():
        await register_functions(settings, settings.functions_dir)


def _command_dev(settings: Settings, _args: argparse.Namespace) -> int:
    from taskservice.auth.bootstrap import bootstrap
    from taskservice.embedded import embedded_servers
    from taskservice.service import ROLES

    with embedded_servers(settings) as resolved:
        async def main() -> None:
            await _prepare(resolved, sync_functions=True)
            await bootstrap(resolved, dev_mode=True)
            logger.info("HTTP on http://%s:%d (metrics at /metrics)", resolved.http_host, resolved.http_port,
                        extra={"event": "dev_ready"})
            # Other terminals reach the embedded servers with these variables. The embedded
            # broker does not support idempotent producers, so that setting goes along.
            print(f"export DATABASE_URL='{resolved.database_url}'", flush=True)
            print(f"export KAFKA_BOOTSTRAP_SERVERS='{resolved.kafka_bootstrap_servers}'", flush=True)
            if not resolved.kafka_enable_idempotence:
                print("export TASKSERVICE_KAFKA_ENABLE_IDEMPOTENCE=false", flush=True)
            await _run_service(resolved, ROLES)

        asyncio.run(main())
    return 0


def _command_run(settings: Settings, args: argparse.Namespace) -> int:
    from taskservice.service import parse_roles

    try:
        roles = parse_roles(args.role)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc
    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL (run does not start embedded servers)")
    if "http" in roles:
        from taskservice.auth.bootstrap import bootstrap

        # Creates the first administrator from admin_password, and refuses development defaults.
        asyncio.run(bootstrap(settings, dev_mode=False))
    asyncio.run(_run_service(settings, roles))
    return 0


def _command_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from taskservice.store.migrate import migrate

    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL to the database to migrate")
    applied = asyncio.run(migrate(settings.database_url))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(f'{v:04d}' for v in applied)}" if applied else ""))
    return 0


def _command_functions(settings: Settings, args: argparse.Namespace) -> int:
    from taskservice.admin import register_functions

    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL")
    folder = args.dir or settings.functions_dir
    changed = asyncio.run(register_functions(settings, folder))
    print(f"registered functions from {folder}: {', '.join(changed) if changed else 'no changes'}")
    return 0


def _json_object_option(option: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(f"{option} {text!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ServiceError(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


def _command_dispatchers(settings: Settings, args: argparse.Namespace) -> int:
    from taskservice.admin import create_dispatcher

    if settings.database_url is None:
        raise ServiceError("database_url is not set; set DATABASE_URL")
    data = _json_object_option("--data", args.data)
    tags = [tag for tag in args.tags.split(",") if tag]
    rules = {
        "filter": _json_object_option("--filter", args.filter),
        "transition": _json_object_option("--transition", args.transition),
        "input": _json_object_option("--input", args.input),
        "includeEvent": args.include_event, "deduplicationKey": args.deduplication_key,
        "concurrencyKey": args.concurrency_key, "delaySeconds": args.delay, "priority": args.priority,
    }
    dispatcher_id = asyncio.run(create_dispatcher(
        settings, args.event_type, args.function, args.name, data, tags,
        rules={field: value for field, value in rules.items() if value is not None}))
    print(dispatcher_id)
    return 0


def _command_schedules(settings: Settings, args: argparse.Namespace) -> int:
    from taskservice.scheduler.commands import run_schedules_command

    return run_schedules_command(settings, args)


def _command_events(settings: Settings, args: argparse.Namespace) -> int:
    from taskservice.admin import publish_lines

    text = sys.stdin.read() if str(args.file) == "-" else _read_file(args.file)
    count = asyncio.run(publish_lines(settings, args.topic, text, raw=args.raw, source=str(args.file)))
    print(f"published {count} record(s) to {args.topic}")
    if args.topic not in settings.topics:
        print(f"warning: ingest does not read topic {args.topic!r} (it reads {', '.join(settings.topics)}); "
              "add it to TASKSERVICE_TOPICS or publish to one of those", file=sys.stderr)
    return 0


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ServiceError(f"file {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise ServiceError(f"file {path} is not UTF-8 text: {exc}") from exc


def _command_demo(settings: Settings, args: argparse.Namespace) -> int:
    from taskservice.demo.runner import run_demo

    if args.limit < 1:
        raise ServiceError(f"--limit must be at least 1 (got {args.limit})")
    if args.rate <= 0:
        raise ServiceError(f"--rate must be positive (got {args.rate})")
    summary = run_demo(settings, limit=args.limit, rate=args.rate, timeout_s=args.timeout)
    _print_summary(summary, as_json=args.json)
    return 0 if summary["all_accounted_for"] else 1


def _print_summary(summary: dict[str, Any], *, as_json: bool) -> None:
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    if as_json:
        print(orjson.dumps(summary).decode())


_COMMANDS = {
    "dev": _command_dev,
    "run": _command_run,
    "migrate": _command_migrate,
    "functions": _command_functions,
    "dispatchers": _command_dispatchers,
    "schedules": _command_schedules,
    "events": _command_events,
    "demo": _command_demo,
    **AUTH_COMMANDS,
    **RECOVERY_COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load settings and run the command; return the exit code."""
    args = _build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ValidationError as exc:
        print(f"taskservice: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"taskservice: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return _COMMANDS[args.command](settings, args)
    except ServiceError as exc:
        print(f"taskservice: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
