# Source: Azure/azureml-examples cli/endpoints/online/model-1/onlinescoring/score.py
#         @ 076bbc7228edfe13ec771bf52499bba03a84e35c (MIT)
# Contract kept: the model under os.getenv('AZUREML_MODEL_DIR'), logging.info in init() and in run(),
# json.loads(raw_data)['data'] into a numpy array, result.tolist() returned.
import json
import logging
import os

import joblib
import numpy


def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.pkl"))
    logging.info("Init complete")


def run(raw_data):
    logging.info("model 1: request received")
    result = model.predict(numpy.array(json.loads(raw_data)["data"]))
    logging.info("Request processed")
    return result.tolist()
