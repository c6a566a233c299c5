# Source: Azure/MachineLearningNotebooks how-to-use-azureml/deployment/deploy-to-local/score.py
#         @ 4ed3f0767acec1746f1c977e5bb776de4c08f1e3 (MIT)
# Contract kept: os.getenv('AZUREML_MODEL_DIR'), an int NumpyParameterType sample (floats sent are
# converted to it), run() catching its own exception and returning its text.
import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.pkl"))


@input_schema("data", NumpyParameterType(np.array([[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]])))
@output_schema(NumpyParameterType(np.array([3726.995])))
def run(data):
    try:
        return model.predict(data).tolist()
    except Exception as e:
        return str(e)
