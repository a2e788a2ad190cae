"""Handlers used by the runtime tests. Each reads its input from task["data"]."""

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

NOT_CALLABLE = 42


def echo(task, context):
    return {"id": task["id"], "data": task.get("data")}


async def async_echo(task, context):
    await asyncio.sleep(0)
    return {"id": task["id"], "loop": id(asyncio.get_running_loop())}


def returns_coroutine(task, context):
    async def compute():
        await asyncio.sleep(0)
        return "awaited"

    return compute()


def pid(task, context):
    return os.getpid()


def sleep_pid(task, context):
    time.sleep(task["data"])
    return os.getpid()


def raise_value_error(task, context):
    raise ValueError(f"bad input {task['id']}")


def fail_when_told(task, context):
    if task["data"] == "fail":
        raise KeyError("missing")
    return task["id"]


def describe_context(task, context):
    return {
        "task_id": context.task_id,
        "function_name": context.function_name,
        "attempt": context.attempt,
        "deadline": context.deadline.isoformat(),
        "remaining_ms": context.get_remaining_time_in_millis(),
        "logger": context.logger.name,
        "cwd": os.getcwd(),
        "sys_path_0": sys.path[0],
    }


def environment(task, context):
    return dict(os.environ)


def return_set(task, context):
    return {1, 2}


def return_int_keys(task, context):
    return {1: "one"}


def return_bytes(task, context):
    return "x" * task["data"]


def print_and_log(task, context):
    print(f"out {task['id']}")
    print("first\nsecond")
    print("no newline", end="")
    print(f"err {task['id']}", file=sys.stderr)
    logging.getLogger("some.library").warning("warned %s", task["id"])
    context.logger.info("context logger %s", task["id"])
    try:
        raise RuntimeError("caught")
    except RuntimeError:
        logging.exception("with traceback")
    return task["id"]


def log_flood(task, context):
    for number in range(task["data"]):
        print(f"line {number:06d} " + "x" * 40)
    return "done"


def write_fd(task, context):
    os.write(1, b"raw stdout bytes\n")
    os.write(2, b"raw stderr bytes\n")
    subprocess.run(["echo", "from a subprocess"], check=True)
    return "ok"


def kill_self(task, context):
    os.kill(os.getpid(), signal.SIGKILL)


def exit_hard(task, context):
    os._exit(3)


def segfault(task, context):
    ctypes.string_at(0)


def allocate_at_once(task, context):
    block = bytearray(task["data"] * 1024 * 1024)
    return len(block) // (1024 * 1024)


def allocate_gradually(task, context):
    blocks = []
    for _ in range(task["data"]):
        blocks.append(bytearray(1024 * 1024))
    return len(blocks)


def start_sleeper(task, context):
    process = subprocess.Popen(["sleep", "30"])
    return process.pid


def start_sleeper_and_hang(task, context):
    process = subprocess.Popen(["sleep", "30"])
    print(f"sleeper {process.pid}")
    time.sleep(30)


def crash_on_data(task, context):
    if task["data"] == "exit":
        os._exit(3)
    if task["data"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    with open(os.environ["RUN_LOG"], "a", encoding="utf-8") as run_log:
        run_log.write(task["id"] + "\n")
    return {"id": task["id"], "pid": os.getpid()}


def write_pid_and_hang(task, context):
    # Renaming makes the file appear with its full content.
    partial_path = os.environ["PID_FILE"] + ".partial"
    with open(partial_path, "w", encoding="utf-8") as pid_file:
        pid_file.write(str(os.getpid()))
    os.replace(partial_path, os.environ["PID_FILE"])
    time.sleep(30)


def unstorable_text(task, context):
    # Task data travels as JSON, which cannot carry lone surrogates, so the
    # handler builds the text from a code point.
    data = task["data"]
    text = f"a{chr(data['code_point'])}b"
    place = data["place"]
    if place == "result":
        return text
    if place == "nested":
        return {"list": [text, (text, {"inner": text})]}
    if place == "key":
        return {text: 1}
    if place == "print":
        print(text)
        return "printed"
    if place == "logging":
        logging.getLogger("some.library").warning("message %s", text)
        return "logged"
    if place == "error":
        raise ValueError(text)
    if place == "set_next_to_text":
        return {text: {1, 2}}
    if place == "int_key_next_to_text":
        return {1: text}
    if place == "raw_output_then_exit":
        os.write(1, text.encode("utf-8", "surrogatepass") + b"\n")
        os._exit(3)
    raise ValueError(f"unknown place {place!r}")
