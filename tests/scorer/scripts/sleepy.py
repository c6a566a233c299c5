"""run() sleeps as long as asked (holding the GIL, when asked, as a C extension may), and says which
process served it."""
import ctypes
import json
import os
import time


def init():
    time.sleep(float(os.environ.get("INIT_SECONDS", "0")))


def run(raw_data):
    asks = json.loads(raw_data)
    if asks.get("hold_gil"):
        ctypes.PyDLL(None).sleep(int(asks["hold_gil"]))  # a PyDLL call keeps the GIL: no other thread runs
    time.sleep(asks.get("sleep", 0))
    return {"pid": os.getpid()}
