"""init() succeeds in the first workers and fails in a replacement: the worker that dies on a request leaves
the GPU memory its successor needs still held (INIT_MARKER marks it)."""
import json
import os
from pathlib import Path

HELD = Path(os.environ["INIT_MARKER"])


def init():
    if HELD.exists():
        raise RuntimeError("CUDA out of memory: its predecessor's memory is still held")


def run(raw_data):
    if json.loads(raw_data).get("die"):
        HELD.write_text("held")
        os._exit(1)
    return {"pid": os.getpid()}
