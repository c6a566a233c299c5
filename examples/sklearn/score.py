"""A plain Azure ML entry script: init() loads the model, run() gets the raw request body.

Request: {"data": [[sepal length, sepal width, petal length, petal width], ...]}
Response: the predicted iris class (0, 1 or 2) of each row.
"""

import json
import os
from pathlib import Path

import joblib
import numpy as np

model = None


def find_model(model_dir: str) -> Path:
    """AZUREML_MODEL_DIR is the version folder of one model, or a root holding <name>/<version>/."""
    root = Path(model_dir)
    if (root / "model.pkl").is_file():
        return root / "model.pkl"
    found = sorted(root.glob("*/*/model.pkl"))
    if not found:
        raise FileNotFoundError(f"no model.pkl under {root}")
    return found[0]


def init():
    global model
    model = joblib.load(find_model(os.environ["AZUREML_MODEL_DIR"]))


def run(raw_data):
    rows = np.array(json.loads(raw_data)["data"], dtype=float)
    return model.predict(rows).tolist()
