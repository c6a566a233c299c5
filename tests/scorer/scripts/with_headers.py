"""run(data, request_headers): the headers come along."""
import json


def init():
    pass


def run(data, request_headers):
    # Spelled as Azure ML's Werkzeug headers let scripts spell it: lookups ignore case.
    return {"tenant": request_headers.get("X-Tenant"), "tenant_key": request_headers["x-TENANT"] if "X-TENANT" in request_headers else None, "echo": json.loads(data)}
