"""init() fails the first time (a model store not reachable yet) and succeeds once tried again."""
import os
from pathlib import Path

TRIED = Path(os.environ["INIT_MARKER"])


def init():
    if not TRIED.exists():
        TRIED.write_text("tried")
        raise RuntimeError("model store not reachable yet")


def run(raw_data):
    return {"pid": os.getpid()}
