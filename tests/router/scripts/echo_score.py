"""Test entry script: says which version and process answered; sleeps or pads on request."""
import json
import os
import time


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data) if raw_data else {}
    time.sleep(float(data.get("sleep", 0)))
    answer = {"version": os.environ.get("TEST_VERSION", "?"), "pid": os.getpid(), "received": len(raw_data)}
    if data.get("pad"):
        answer["pad"] = "x" * int(data["pad"])
    return answer
