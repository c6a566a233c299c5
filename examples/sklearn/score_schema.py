"""The same model as score.py, as an inference_schema entry script.

The decorators declare the input and output, so the server parses and converts the request
(a 400 on a bad one) and publishes /swagger.json.
"""

import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

from score import find_model

model = None


def init():
    global model
    model = joblib.load(find_model(os.environ["AZUREML_MODEL_DIR"]))


@input_schema("data", NumpyParameterType(np.array([[5.1, 3.5, 1.4, 0.2]])))
@output_schema(NumpyParameterType(np.array([0])))
def run(data):
    return model.predict(data).tolist()
