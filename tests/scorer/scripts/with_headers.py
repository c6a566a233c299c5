"""run(data, request_headers): the headers come along."""
import json


def init():
    pass


def run(data, request_headers):
    return {"tenant": request_headers.get("x-tenant"), "echo": json.loads(data)}
