"""The @rawhttp form at its edges: a preflight it answers itself, a header value from the client,
a JSON answer with keys that are not strings, a status of its own, headers that frame the body, a JSON answer
in Latin-1 (a legacy system's bytes, passed through), an HTTP error raised."""
import werkzeug.exceptions
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "OPTIONS":
        return AMLResponse("", 204, {"Access-Control-Allow-Origin": "https://app.example.com"})
    if request.args.get("status") is not None:
        status = request.args["status"]
        return AMLResponse("as asked", int(status) if status.isdigit() else status)
    if request.args.get("framed") is not None:  # its own length (right), chunking and request id
        return AMLResponse("framed", 200, {"Content-Length": "6", "Transfer-Encoding": "chunked", "X-Request-Id": "mine"})
    if request.args.get("failed") is not None:  # a 4xx it counts as its own failure, as Azure ML's API allows
        return AMLResponse({"error": "bad model state"}, 409, {}, json_str=True, run_function_failed=True)
    if request.args.get("latin1") is not None:
        return AMLResponse('{"name": "Jos\u00e9"}'.encode("latin-1"), 200, {"Content-Type": "application/json"})
    if request.args.get("abort") is not None:  # Werkzeug's (Flask's abort()): a 5xx is the script failing
        raise werkzeug.exceptions.ServiceUnavailable("the model is reloading")
    if request.args.get("echo") is not None:
        return AMLResponse("ok", 200, {"X-Echo": request.args.get("echo")})
    return AMLResponse({0: "a", 1: "b"}, 200, json_str=True)
