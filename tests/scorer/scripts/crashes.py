"""A worker that dies: in init() when INIT_DIES_AFTER is set (killed, as for memory), or in run() when
asked (a plain exit, or a segfault in native code)."""
import ctypes
import json
import os
import signal
import time


def init():
    if os.environ.get("INIT_DIES_AFTER"):
        time.sleep(float(os.environ["INIT_DIES_AFTER"]))
        os.kill(os.getpid(), signal.SIGKILL)


def run(raw_data):
    asks = json.loads(raw_data)
    if asks.get("exit"):
        os._exit(1)
    if asks.get("segfault"):
        ctypes.string_at(0)
    return {"pid": os.getpid()}
