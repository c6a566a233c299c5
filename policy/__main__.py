"""The policy pack: `pulumi preview --policy-pack policy` runs this file.

Only here is `PolicyPack` built (its constructor serves the engine and never returns); the
rules live in `policy.rules` so the offline plan and the tests can import and call them.
"""

import sys
from pathlib import Path

# The rules import the project's tables (components): in the checkout from the folder above policy/. A
# published copy (`python -m components policy-pack`) carries them, and runs from its own folder, first
# on the path as for any pack.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulumi_policy import (  # noqa: E402
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

from policy.rules import RESOURCE_RULES, STACK_RULES  # noqa: E402


def _schema(properties: dict) -> PolicyConfigSchema | None:
    return PolicyConfigSchema(properties) if properties else None


PolicyPack(
    name="aks-model-serving",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(name=name, description=description, validate=rule, config_schema=_schema(props))
        for name, (description, rule, props) in RESOURCE_RULES.items()
    ]
    + [
        StackValidationPolicy(name=name, description=description, validate=rule, config_schema=_schema(props))
        for name, (description, rule, props) in STACK_RULES.items()
    ],
)
