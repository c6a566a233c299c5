# Source: MicrosoftDocs/azure-docs articles/machine-learning/how-to-troubleshoot-deployment.md
#         @ 0076a623dc066a91d0839fed41aae9fe9870d745 ("Function fails: run(input_data)")
# Contract kept: run(input_data) returning json.dumps({"result": ...}), and json.dumps({"error": ...}) from
# its except: a string of JSON, which the server sends JSON-encoded once more (a JSON string), as many
# scripts written from that page do. The page shows run() alone; init() loads its model as the
# page's single-model AZUREML_MODEL_DIR example does.
import json
import os

import joblib
import numpy as np


def init():
    global model
    model = joblib.load(os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.pkl"))


def run(input_data):
    try:
        data = np.array(json.loads(input_data)["data"])
        return json.dumps({"result": model.predict(data).tolist()})
    except Exception as e:
        return json.dumps({"error": str(e)})
