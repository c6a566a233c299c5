# Source: MicrosoftDocs/azure-docs articles/machine-learning/how-to-deploy-advanced-entry-script.md
#         @ 00f7b13ac208011eb0875dbf47d2f1e32cbf569e ("Power BI compatible endpoint"), with the page's
#         PandasParameterType input that docs_global_parameters.py leaves out (pandas is not in the image)
# Contract kept: a nested StandardPythonParameterType 'Inputs' holding a NumpyParameterType, a
# PandasParameterType and a plain value, 'GlobalParameters', output {'Results': [...]}; run() sees
# Inputs['input2'] as a DataFrame. Decorators at module level and `Inputs` spelt as the decorator names it:
# the page's sample does not run as printed.
import os

import joblib
import numpy as np
import pandas as pd
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.pkl"))


sample_input = StandardPythonParameterType({
    "input1": NumpyParameterType(np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]],
                                          dtype="float64")),
    "input2": PandasParameterType(pd.DataFrame({"name": ["Sarah", "John"], "age": [25, 26]})),
    "input3": StandardPythonParameterType(0.0),
})


@input_schema("Inputs", sample_input)
@input_schema("GlobalParameters", StandardPythonParameterType(1.0))
@output_schema(StandardPythonParameterType({"Results": StandardPythonParameterType([1.0, 1.0])}))
def run(Inputs, GlobalParameters):
    people = Inputs["input2"]
    assert isinstance(people, pd.DataFrame)
    return {"Results": (model.predict(Inputs["input1"]) * GlobalParameters).tolist(),
            "oldest": people.loc[people["age"].idxmax(), "name"]}
