"""An entry script whose init() collects (a reference row, as some Azure ML scripts log one at start), run() too."""
from azureml.monitoring import ModelDataCollector


def init():
    global inputs_dc
    inputs_dc = ModelDataCollector("sklearn-iris", designation="inputs", feature_names=["feat1", "feat2"])
    inputs_dc.collect([0, 0])


def run(raw_data):
    inputs_dc.collect([1, 1])
    return {"ok": True}
