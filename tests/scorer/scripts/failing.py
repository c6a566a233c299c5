"""run() raises (after sleeping as long as asked): the client gets a 500 without the traceback; the log has it."""
import json
import time


def init():
    pass


def run(raw_data):
    time.sleep(json.loads(raw_data).get("sleep", 0))
    raise ValueError("secret-detail-in-traceback")
