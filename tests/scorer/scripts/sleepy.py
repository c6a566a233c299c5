"""run() sleeps as long as asked, and says which process served it."""
import json
import os
import time


def init():
    pass


def run(raw_data):
    time.sleep(json.loads(raw_data).get("sleep", 0))
    return {"pid": os.getpid()}
