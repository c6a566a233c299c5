"""The @rawhttp form, importing Azure ML's module names as existing scripts do."""
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "OPTIONS":  # a CORS preflight, answered by the script as Azure ML's samples do
        return AMLResponse("", 200, {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST"})
    if request.method == "GET":
        return AMLResponse(f"GET with q={request.args.get('q')}", 200)
    body = request.get_json()
    return AMLResponse(
        {"method": request.method, "got": body, "header": request.headers.get("X-Custom")},
        201,
        {"X-Scored-By": "raw_request"},
        json_str=True,
    )
