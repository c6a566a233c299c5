# Source: MicrosoftDocs/azure-docs articles/machine-learning/how-to-deploy-advanced-entry-script.md
#         @ 00f7b13ac208011eb0875dbf47d2f1e32cbf569e ("Power BI compatible endpoint")
# Contract kept: a nested StandardPythonParameterType 'Inputs' holding a NumpyParameterType and a plain
# value, a 'GlobalParameters' StandardPythonParameterType, output {'Results': [...]}, run(Inputs,
# GlobalParameters) predicting on Inputs['input1'] (converted to numpy by the decorator). The page's
# sample does not run as printed (decorators inside init(), `inputs` for `Inputs`); here they are at
# module level, and the page's PandasParameterType input is left out (pandas is not in the image).
import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.pkl"))


numpy_sample_input = NumpyParameterType(np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]],
                                                 dtype="float64"))
sample_input = StandardPythonParameterType({"input1": numpy_sample_input, "input3": StandardPythonParameterType(0.0)})
sample_global_parameters = StandardPythonParameterType(1.0)
outputs = StandardPythonParameterType({"Results": StandardPythonParameterType([1.0, 1.0])})


@input_schema("Inputs", sample_input)
@input_schema("GlobalParameters", sample_global_parameters)
@output_schema(outputs)
def run(Inputs, GlobalParameters):
    try:
        data = Inputs["input1"]
        assert isinstance(data, np.ndarray)
        return {"Results": (model.predict(data) * GlobalParameters).tolist()}
    except Exception as e:
        return str(e)
