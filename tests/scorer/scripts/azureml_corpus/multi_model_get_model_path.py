# Source: Azure/MachineLearningNotebooks how-to-use-azureml/deployment/deploy-multi-model/
#         multi-model-register-and-deploy.ipynb (its %%writefile score.py cell)
#         @ 0e17b33d2a02257b5867c31cc33ed8c4bb802d7d (MIT)
# Contract kept: two models found by name with azureml.core's Model.get_model_path in init(), an
# undecorated run(raw_data) reading json.loads(raw_data)['data'], a dict of both predictions, and any
# exception returned as its text.
import json

import joblib
import numpy as np
from azureml.core.model import Model


def init():
    global model_1, model_2
    model_1 = joblib.load(Model.get_model_path(model_name="my_first_model"))
    model_2 = joblib.load(Model.get_model_path(model_name="my_second_model"))


def run(raw_data):
    try:
        data = np.array(json.loads(raw_data)["data"])
        return {"prediction1": model_1.predict(data).tolist(), "prediction2": model_2.predict(data).tolist()}
    except Exception as e:
        return str(e)
