"""A plain entry script for the edges of Azure ML's contract: run() exiting, keys that are not strings,
a body with NaN (as Python's json.dumps writes it), an int over 64 bits."""
import json
import sys


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)
    if data.get("exit"):
        sys.exit(3)
    if data.get("big"):
        return {"id": 2**70 + 1}
    if data.get("labels"):
        return {0: "setosa", 1: "versicolor"}
    return {"rows": len(data["data"])}
