"""The script configures logging itself, replacing the root logger's handlers with one on sys.stderr, as
logging.basicConfig(force=True) does."""
import logging


def init():
    logging.basicConfig(level=logging.INFO, force=True)
    logging.getLogger("score").info("model loaded")


def run(raw_data):
    logging.getLogger("score").info("scoring")
    print("printed by run()")
    return {"ok": True}
