"""The Pulumi program: read the stack's config, validate it, declare the components.

A bad stack stops here, before any resource is declared, with every problem named.
"""

from pathlib import Path

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from components.documents import Misread, load_yaml
from components.program import build
from components.stackfile import PROJECT, Stack, StackError, parse_config, secure_paths

project_dir = Path(__file__).resolve().parent
config = pulumi.Config(PROJECT)
# Every key of ours that Pulumi hands over (set in the program's context, else in PULUMI_CONFIG), not
# only the known ones: a misspelt key is refused, as `check` refuses it, instead of deploying the stack
# without that setting (`servces:` would delete every service).
# Read as text (objects come as their JSON text, which parse_config reads): get_object's error on a plain
# string would quote the value, a secret's too.
ours = sorted({key.partition(":")[2] for key in {**get_config_env(), **CONFIG.get()} if key.startswith(f"{PROJECT}:")})
raw = {f"{PROJECT}:{key}": value for key in ours if (value := config.get(key)) is not None}
if location := pulumi.Config("azure-native").get("location"):
    raw["azure-native:location"] = location

# Pulumi hands `secure:` values over decrypted; the stack file says which they are. It is read as check reads
# it, so that what check refuses in it (a key written twice, `count: 010`) does not deploy either.
name = pulumi.get_stack()
stack_file = project_dir / "stacks" / f"Pulumi.{name}.yaml"
try:
    doc = load_yaml(stack_file.read_text()) if stack_file.is_file() else None
except Misread as exc:
    raise pulumi.RunError(f"{stack_file}:\n  " + "\n  ".join(exc.problems)) from None
secrets = secure_paths((doc or {}).get("config") or {})

try:
    spec, providers = parse_config(raw, project_dir, secrets)
except StackError as exc:
    raise pulumi.RunError("the stack is not valid:\n  " + "\n  ".join(exc.problems)) from None

build(Stack(name=name, path=stack_file, project_dir=project_dir, spec=spec, provider_config=providers))
