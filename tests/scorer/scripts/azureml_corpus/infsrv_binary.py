# Source: microsoft/azureml-inference-server tests/server/test_data/entry_scripts/binary_main.py
#         @ a4ece6200d1b273316e2e24adf35add98fdb2068 (MIT)
# Contract kept: an undecorated run(input_data) returning AMLResponse(<bytes>, 200) with no Content-Type.
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


def run(input_data):
    return AMLResponse(b"xd8\xe1\xb7\xeb\xa8\xe5", 200)
