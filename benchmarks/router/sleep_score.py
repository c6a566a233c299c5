"""The autoscaling run's entry script: each request holds its replica for SLEEP_MS (default 40 ms)."""
import os
import time

SLEEP_S = float(os.environ.get("SLEEP_MS", "40")) / 1000


def init():
    pass


def run(raw_data):
    time.sleep(SLEEP_S)
    return {"slept_ms": SLEEP_S * 1000}
