"""Train a small scikit-learn model and save it in Azure ML's model-dir layout.

`python examples/sklearn/train.py --out DIR` writes `DIR/<name>/<version>/model.pkl`:
a logistic regression on scikit-learn's bundled iris data (150 rows, trains in milliseconds).
Point AZUREML_MODEL_DIR at `DIR/<name>/<version>` (one model) or at `DIR` (several).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

DEFAULT_NAME = "sklearn-iris"


def train(out: Path, name: str = DEFAULT_NAME, version: str = "1") -> Path:
    """Fit the model and save it; returns the path of model.pkl."""
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    target = Path(out) / name / version / "model.pkl"
    target.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model root folder")
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    print(train(args.out, args.name, args.version))


if __name__ == "__main__":
    main()
