"""The @rawhttp form at its edges: a preflight it answers itself, a header value from the client,
a JSON answer with keys that are not strings, a status of its own."""
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "OPTIONS":
        return AMLResponse("", 204, {"Access-Control-Allow-Origin": "https://app.example.com"})
    if request.args.get("status") is not None:
        return AMLResponse("as asked", int(request.args["status"]))
    if request.args.get("echo") is not None:
        return AMLResponse("ok", 200, {"X-Echo": request.args.get("echo")})
    return AMLResponse({0: "a", 1: "b"}, 200, json_str=True)
