# Source: microsoft/MLOpsPython diabetes_regression/scoring/score.py
#         @ 252207ae13007bed5ecc6a2b6bab629cb63e59e4 (MIT)
# Contract kept: Model.get_model_path(<one model's name>) in init(), a NumpyParameterType 'data' with
# run(data, request_headers), a JSON line printed from the request's X-Ms-Request-Id and Traceparent
# headers, {"result": [...]} returned. The model's name from AZUREML_MODEL_DIR by position, `.split('/')[1]`,
# which takes Azure ML's relative form (azureml-models/<name>/<version>).
import os

import joblib
import numpy
from azureml.core.model import Model
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global model
    model = joblib.load(Model.get_model_path(os.getenv("AZUREML_MODEL_DIR").split("/")[1]))


input_sample = numpy.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]])
output_sample = numpy.array([5021.509689995557, 3693.645386402646])


@input_schema("data", NumpyParameterType(input_sample))
@output_schema(NumpyParameterType(output_sample))
def run(data, request_headers):
    result = model.predict(data)
    print('{{"RequestId":"{0}", "TraceParent":"{1}", "NumberOfPredictions":{2}}}'.format(
        request_headers.get("X-Ms-Request-Id", ""), request_headers.get("Traceparent", ""), len(result)))
    return {"result": result.tolist()}
