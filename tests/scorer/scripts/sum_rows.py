"""A raw entry script: sums each row; prints (the print must reach the log with the request id)."""
import json
import os


def init():
    print("sum_rows ready")


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    print(f"summing {len(rows)} row(s)")
    return {"sums": [sum(row) for row in rows], "pid": os.getpid()}
