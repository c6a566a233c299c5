"""A PyTorch model, on the GPU where there is one, as Azure ML's GPU deployments run theirs: built and
loaded once in init() from AZUREML_MODEL_DIR, run() in inference mode (tests/scorer/test_gpu.py and
benchmarks/scorer/gpu write the weights; torch_mlp.build makes the same network).

{"data": rows} -> {"output": the model's outputs, "device", "pid", "allocated": bytes this worker holds};
{"busy_s": s} keeps the device busy that long: a run() past the scoring timeout."""

import json
import os
import time

import torch

FEATURES, HIDDEN, OUTPUTS, LAYERS = 256, 1024, 8, 3
model = None
device = None


def build() -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = FEATURES
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(width, HIDDEN), torch.nn.ReLU()]
        width = HIDDEN
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, OUTPUTS))


def init():
    global model, device
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build()
    model.load_state_dict(torch.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "torch-mlp", "1", "model.pt"),
                                     map_location="cpu", weights_only=True))
    model = model.to(device).eval()
    with torch.inference_mode():  # the first call pays the kernels' load; a probe's request should not
        model(torch.zeros(1, FEATURES, device=device))


def run(raw_data):
    payload = json.loads(raw_data)
    if "busy_s" in payload:
        until = time.monotonic() + payload["busy_s"]
        x = torch.rand(2048, 2048, device=device)
        while time.monotonic() < until:
            x = torch.sigmoid(x @ x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return {"busy": True}
    with torch.inference_mode():
        output = model(torch.tensor(payload["data"], dtype=torch.float32, device=device))
    allocated = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    return {"output": output.cpu().tolist(), "device": str(device), "pid": os.getpid(), "allocated": allocated}
