# Source: MicrosoftDocs/azure-docs articles/machine-learning/how-to-deploy-advanced-entry-script.md
#         @ 00f7b13ac208011eb0875dbf47d2f1e32cbf569e ("Cross-origin resource sharing (CORS)")
# Contract kept: a @rawhttp run() that sets Access-Control-Allow-Origin on the AMLResponse it returns
# (resp.headers[...] = ...), and answers any method but GET and POST (a browser's OPTIONS too) with a 500.
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    print("This is init()")


@rawhttp
def run(request):
    if request.method == "GET":
        return AMLResponse(str.encode(request.full_path), 200)
    if request.method == "POST":
        resp = AMLResponse(request.get_data(False), 200)
        resp.headers["Access-Control-Allow-Origin"] = "http://www.example.com"
        return resp
    return AMLResponse("bad request", 500)
