"""A PyTorch model served by the scorer, on the GPU where there is one: answers as the network computes them,
a run() past the timeout on the device, and the device memory of workers replaced and stopped.

torch is not among the project's dependencies: CI skips these; they run wherever torch is installed (on the
CPU, and with CUDA on a GPU machine: `python -m pytest tests/scorer/test_gpu.py`). The tests that read the
device's memory need CUDA."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import time
from pathlib import Path

import pytest

from scorer_helpers import SCRIPTS, StartScorer, wait_until

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="reads a CUDA device's memory; no CUDA device here")
MiB = 1024 * 1024


def _script():
    spec = importlib.util.spec_from_file_location("torch_mlp", SCRIPTS / "torch_mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mlp = _script()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """Azure ML's layout, torch-mlp/1/model.pt, and the network in this process (on the CPU) to check against."""
    root = tmp_path_factory.mktemp("torch-models")
    torch.manual_seed(7)
    network = mlp.build().eval()
    (root / "torch-mlp" / "1").mkdir(parents=True)
    torch.save(network.state_dict(), root / "torch-mlp" / "1" / "model.pt")
    return root, network


def _start(start_scorer: StartScorer, model_dir, workers: int = 1, **env: str):
    return start_scorer("torch_mlp.py", workers=workers, env={"AZUREML_MODEL_DIR": str(model_dir[0]), **env}).wait_ready(120)


def _used() -> int:
    """Bytes in use on the device, by every process (this one's context included)."""
    free, total = torch.cuda.mem_get_info()
    return total - free


def test_a_torch_model_answers_as_the_network_computes(start_scorer: StartScorer, model_dir) -> None:
    server = _start(start_scorer, model_dir)
    rows = torch.rand(16, mlp.FEATURES, generator=torch.Generator().manual_seed(3))
    response = server.post(json={"data": rows.tolist()})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["device"] == ("cuda" if CUDA else "cpu")
    with torch.inference_mode():
        expected = model_dir[1](rows)
    assert torch.allclose(torch.tensor(answer["output"]), expected, rtol=1e-4, atol=1e-5)
    assert float(response.headers["x-ms-run-fn-exec-ms"]) > 0


def test_a_run_past_the_timeout_on_the_device_is_504_and_a_fresh_worker_serves(start_scorer: StartScorer,
                                                                                model_dir) -> None:
    server = _start(start_scorer, model_dir, SCORING_TIMEOUT_MS="2000")
    before = server.post(json={"data": [[0.0] * mlp.FEATURES]}).json()["pid"]
    started = time.monotonic()
    stuck = server.post(json={"busy_s": 30})
    assert stuck.status_code == 504, stuck.text
    assert time.monotonic() - started < 10  # the deadline, not the 30 s of device work
    server.wait_ready(120)
    after = server.post(json={"data": [[0.0] * mlp.FEATURES]})
    assert after.status_code == 200 and after.json()["pid"] != before


@needs_cuda
def test_the_device_memory_of_a_replaced_worker_and_of_a_stopped_server_is_freed(start_scorer: StartScorer,
                                                                                 model_dir) -> None:
    """A worker recycled after a timeout leaves its CUDA context behind only while it exits: the replacement
    must not stack a second copy of the model on the device, and a stopped pod must leave nothing there."""
    baseline = _used()
    server = _start(start_scorer, model_dir, SCORING_TIMEOUT_MS="2000")
    one_worker = _used() - baseline
    assert one_worker > 100 * MiB  # a CUDA context and the model: the worker really is on the device
    assert server.post(json={"busy_s": 30}).status_code == 504
    server.wait_ready(120)
    assert server.post(json={"data": [[0.0] * mlp.FEATURES]}).status_code == 200
    wait_until(lambda: _used() - baseline < 1.5 * one_worker, 20, "the recycled worker's device memory freed")
    server.stop()
    wait_until(lambda: _used() - baseline < 64 * MiB, 20, "the stopped server's device memory freed")


@needs_cuda
def test_each_worker_holds_its_own_copy_of_the_model_on_the_device(start_scorer: StartScorer, model_dir) -> None:
    """Why a GPU service runs one worker (components.service): each worker loads the model onto the device."""
    baseline = _used()
    one = _start(start_scorer, model_dir)
    one_worker = _used() - baseline
    one.stop()
    wait_until(lambda: _used() - baseline < 64 * MiB, 20, "the first server's device memory freed")
    two = _start(start_scorer, model_dir, workers=2)
    assert _used() - baseline > 1.7 * one_worker
    rows = {"data": [[0.5] * mlp.FEATURES]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # connections at once: both workers take some
        answers = [r.json() for r in pool.map(lambda _: two.post(json=rows), range(64))]
    assert {a["device"] for a in answers} == {"cuda"}
    assert len({a["pid"] for a in answers}) == 2
    assert all(a["allocated"] > 0 for a in answers)


@needs_cuda
def test_a_server_given_the_gpu_runs_one_worker_unless_told_otherwise(start_scorer: StartScorer, model_dir) -> None:
    """As `docker run --gpus all` starts the image on a many-core GPU host, with no WORKER_COUNT."""
    server = start_scorer("torch_mlp.py", workers=None, env={"AZUREML_MODEL_DIR": str(model_dir[0])}).wait_ready(120)
    rows = {"data": [[0.5] * mlp.FEATURES]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [r.json() for r in pool.map(lambda _: server.post(json=rows), range(32))]
    assert len({a["pid"] for a in answers}) == 1
