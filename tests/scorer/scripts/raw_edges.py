"""The @rawhttp form at its edges: a preflight it answers itself, a header value from the client,
a JSON answer with keys that are not strings, a status of its own, headers that frame the body, a JSON answer
in Latin-1 (a legacy system's bytes, passed through), an HTTP error raised, headers set as a Flask Response's,
a file sent."""
import werkzeug.exceptions
import werkzeug.utils
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
    if request.args.get("headers") is not None:  # set as a Flask Response's: names in any case, added, repeated
        response = AMLResponse("ok", 200, {"content-type": "text/plain"})
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers.add("Vary", "Origin")
        response.headers.add("Vary", "Accept")
        response.headers["X-Type-Was"] = response.headers["Content-Type"]
        return response
    if request.args.get("file") is not None:  # Werkzeug's send_file (Flask's wraps it): the file, in passthrough
        return werkzeug.utils.send_file(__file__, request.environ, mimetype="text/x-python")
    if request.args.get("echo") is not None:
        return AMLResponse("ok", 200, {"X-Echo": request.args.get("echo")})
    return AMLResponse({0: "a", 1: "b"}, 200, json_str=True)
