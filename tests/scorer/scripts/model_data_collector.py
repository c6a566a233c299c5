"""An Azure ML v1 entry script that collects its own model data, as Azure ML's documentation shows it."""
import json

import numpy as np
from azureml.monitoring import ModelDataCollector


def init():
    global inputs_dc, prediction_dc
    inputs_dc = ModelDataCollector("sklearn-iris", designation="inputs", feature_names=["feat1", "feat2"])
    prediction_dc = ModelDataCollector("sklearn-iris", designation="predictions", feature_names=["prediction1"])


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    result = data.sum(axis=1)
    correlations = inputs_dc.collect(data)
    prediction_dc.collect(prediction_dc.add_correlations(result, correlations))
    return {"sums": result.tolist(), "correlations": correlations}
