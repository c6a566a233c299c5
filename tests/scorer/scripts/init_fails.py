"""init() fails: the server must stay up, not ready, and say why."""


def init():
    raise RuntimeError("model file is corrupt")


def run(raw_data):
    return "unreachable"
