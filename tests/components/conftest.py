"""Shared pieces of the component tests: the example stacks and Kubernetes schema validation."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from components.stackfile import Stack, load_stack

STACKS = Path(__file__).resolve().parents[2] / "stacks"


@pytest.fixture
def stack():
    """Load stacks/Pulumi.<name>.yaml."""
    def load(name: str) -> Stack:
        return load_stack(STACKS / f"Pulumi.{name}.yaml")
    return load


@pytest.fixture
def validate():
    """Validate manifests against the Kubernetes schema of `version`, strictly (misspelled fields fail).

    Returns how many it validated, so a caller can assert that there was something to check.
    """
    def check(manifests: list[dict], version: str) -> int:
        for doc in manifests:
            kubernetes_validate.validate(doc, version, strict=True)
        return len(manifests)
    return check
