# Source: Azure/MachineLearningNotebooks how-to-use-azureml/deployment/deploy-to-cloud/score.py
#         @ b361ab4929c8e10ef37edd8fea83652f3cb27db8 (MIT)
# Contract kept: the model file under os.environ['AZUREML_MODEL_DIR'] (one model), a 2-D float
# NumpyParameterType input 'data' and output sample, run() returning result.tolist().
import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "sklearn_regression_model.pkl"))


@input_schema("data", NumpyParameterType(np.array([[0.1, 1.2, 2.3, 3.4, 4.5, 5.6, 6.7, 7.8, 8.9, 9.0]])))
@output_schema(NumpyParameterType(np.array([4429.929236457418])))
def run(data):
    return model.predict(data).tolist()
