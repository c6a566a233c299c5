"""examples/sklearn: the training script the local stack and these tests rely on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import joblib

from scorer_helpers import EXAMPLE, train


def test_train_as_a_function_is_fast_and_uses_the_model_dir_layout(tmp_path: Path) -> None:
    started = time.monotonic()
    path = train.train(tmp_path, "iris", "7")
    assert time.monotonic() - started < 1.0
    assert path == tmp_path / "iris" / "7" / "model.pkl"
    model = joblib.load(path)
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


def test_train_from_the_command_line(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / "sklearn-iris" / "1" / "model.pkl").is_file()
