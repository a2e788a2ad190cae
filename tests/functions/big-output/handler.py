"""Test function: produces a result and log output of a requested size."""


def handle(task, context):
    for number in range(int(task["data"].get("logLines", 0))):
        print(f"{number:06d}" + "x" * 94)
    text = task["data"].get("text")
    if text is not None:
        return {"text": text}
    return {"blob": "y" * int(task["data"].get("resultBytes", 0))}
