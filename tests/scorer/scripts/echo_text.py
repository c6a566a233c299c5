"""A raw run() that answers the text it was given, as it was given."""


def init():
    pass


def run(raw_data):
    return {"text": raw_data}
