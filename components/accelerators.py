"""How accelerator pools and the model replicas that need them find each other.

AksCluster labels and taints each GPU / FPGA pool with these; ModelService gives a replica
asking for gpu_cores / fpga_cores the matching selector, toleration and resource limit; the
policy pack checks the pair. One table, so the three can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Scheduling:
    label_key: str
    label_value: str
    taint_key: str
    taint_value: str
    taint_effect: Literal["NoSchedule"]
    resource: str  # the extended resource a device plugin advertises

    @property
    def taint(self) -> str:
        """AKS node pool taint syntax: key=value:Effect."""
        return f"{self.taint_key}={self.taint_value}:{self.taint_effect}"

    @property
    def selector(self) -> dict[str, str]:
        return {self.label_key: self.label_value}

    @property
    def toleration(self) -> dict[str, str]:
        return {"key": self.taint_key, "operator": "Equal", "value": self.taint_value, "effect": self.taint_effect}


SCHEDULING: dict[str, Scheduling] = {
    "gpu": Scheduling("aks-model-serving/accelerator", "gpu", "sku", "gpu", "NoSchedule", "nvidia.com/gpu"),
    "fpga": Scheduling("aks-model-serving/accelerator", "fpga", "sku", "fpga", "NoSchedule", "microsoft.com/fpga"),
}
