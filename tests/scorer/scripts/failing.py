"""run() raises: the client gets a 500 without the traceback; the log has it."""


def init():
    pass


def run(raw_data):
    raise ValueError("secret-detail-in-traceback")
