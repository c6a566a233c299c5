"""The Pulumi program: read the stack's config, validate it, declare the components.

A bad stack stops here, before any resource is declared, with every problem named.
"""

from pathlib import Path

import pulumi

from components.program import build
from components.spec import StackSpec
from components.stackfile import PROJECT, Stack, StackError, parse_config

project_dir = Path(__file__).resolve().parent
config = pulumi.Config(PROJECT)
raw = {f"{PROJECT}:{key}": value for key in StackSpec.model_fields if (value := config.get_object(key)) is not None}
if location := pulumi.Config("azure-native").get("location"):
    raw["azure-native:location"] = location

try:
    spec, providers = parse_config(raw, project_dir)
except StackError as exc:
    raise pulumi.RunError("the stack is not valid:\n  " + "\n  ".join(exc.problems)) from None

name = pulumi.get_stack()
build(Stack(name=name, path=project_dir / "stacks" / f"Pulumi.{name}.yaml", project_dir=project_dir,
            spec=spec, provider_config=providers))
