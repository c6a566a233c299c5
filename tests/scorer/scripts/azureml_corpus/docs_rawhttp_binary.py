# Source: MicrosoftDocs/azure-docs articles/machine-learning/how-to-deploy-advanced-entry-script.md
#         @ 00f7b13ac208011eb0875dbf47d2f1e32cbf569e ("Binary (i.e. image) data")
# Contract kept: AMLRequest/rawhttp/AMLResponse from azureml.contrib.services, GET answered with
# request.full_path as bytes, POST answered with request.get_data(False) as it came, other methods a 500.
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    print("This is init()")


@rawhttp
def run(request):
    print("Request: [{0}]".format(request))
    if request.method == "GET":
        return AMLResponse(str.encode(request.full_path), 200)
    if request.method == "POST":
        return AMLResponse(request.get_data(False), 200)
    return AMLResponse("bad request", 500)
