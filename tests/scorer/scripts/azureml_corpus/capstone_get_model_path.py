# Source: Aseer-Ahmad/ML-Azure-Capstone starter_file/score.py
#         @ ae2bd812a612319c6f8816567275de28ac9a791f
# Contract kept: `from azureml.core.model import Model`, Model.get_model_path('automl_best_model') in init(),
# run(data) reading one record with json.loads and predicting [record], any exception returned as its text.
import json

import joblib
from azureml.core.model import Model


def init():
    global model
    model = joblib.load(Model.get_model_path("automl_best_model"))


def run(data):
    try:
        return model.predict([json.loads(data)]).tolist()
    except Exception as e:
        return str(e)
