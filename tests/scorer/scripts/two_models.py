"""Two models in one service: AZUREML_MODEL_DIR is the root holding <name>/<version>/."""
import json
import os
from pathlib import Path

import joblib
import numpy as np

models = {}


def init():
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    models["a"] = joblib.load(root / "sklearn-iris" / "1" / "model.pkl")
    models["b"] = joblib.load(root / "sklearn-iris-b" / "2" / "model.pkl")


def run(raw_data):
    rows = np.array(json.loads(raw_data)["data"])
    return {name: model.predict(rows).tolist() for name, model in models.items()}
