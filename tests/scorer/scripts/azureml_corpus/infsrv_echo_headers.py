# Source: microsoft/azureml-inference-server tests/azmlinfsrv/resources/valid_score.py
#         @ 1757aacbd3562c22a8ec67918c7c5a728800dd3e (MIT)
# Contract kept: a @rawhttp run(input_data) iterating input_data.headers as (name, value) pairs, reading
# get_data().decode('utf-8'), and answering AMLResponse(dict, 200, {own headers}, json_str=True); on an
# exception, AMLResponse({'error': ...}, 500, {}, json_str=True).
import os
import time

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    print("Initializing")


@rawhttp
def run(input_data):
    try:
        start_time = time.time()
        received = {}
        for k, v in input_data.headers:
            received[k] = received[k] + ", " + v if k in received else v
        answer = {"received_headers": received, "received_body": input_data.get_data().decode("utf-8"),
                  "pid": os.getpid()}
        if "Fail-With" in received:
            raise ValueError(received["Fail-With"])
        return AMLResponse(answer, 200, {"pid": str(os.getpid()),
                                         "x-ms-run-function-duration": str(time.time() - start_time)}, json_str=True)
    except Exception as e:
        return AMLResponse({"error": str(e)}, 500, {}, json_str=True)
