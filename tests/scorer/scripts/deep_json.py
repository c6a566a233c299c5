"""JSON nested deeply both ways: a schema run() that takes its input as it comes, and answers with an
AMLResponse of JSON nested ANSWER_DEPTH levels (orjson reads 1024 levels, writes 254; msgspec ~990)."""
from azureml_inference_server_http.api.aml_response import AMLResponse
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema

ANSWER_DEPTH = 300


def init():
    pass


@input_schema("data", StandardPythonParameterType([1]), convert_to_provided_type=False)
def run(data):
    return AMLResponse(b"[" * ANSWER_DEPTH + b"]" * ANSWER_DEPTH, 200, {"Content-Type": "application/json"})
