"""A raw entry script that answers with its JSON input pretty-printed, as JSON (an AMLResponse)."""
import json

from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def run(raw_data):
    return AMLResponse(json.dumps(json.loads(raw_data), indent=2), 200, {"Content-Type": "application/json"})
