"""The mandatory rules, as plain validate functions the pack and the offline plan both call.

Each function has pulumi-policy's signature: `(ResourceValidationArgs, report_violation)` for a
rule about one resource, `(StackValidationArgs, report_violation)` for a rule that relates
resources (an HPA to the Deployment it targets, the router's Service to its config). Props are
the camelCase form the engine (and `components.mocks`) hand over; numbers may be floats.

The rules recognise the serving stack's objects by the labels the components put on them:
`app.kubernetes.io/component` = `model` (a scorer Deployment) or `router`, the endpoint a
version belongs to in `aks-model-serving/endpoint`, and the cluster purpose on the router's
Service in `aks-model-serving/cluster-purpose`. The router's routes and TLS come from its
ConfigMap's `config.json` (router_image.config.RouterConfig). An object without metadata.namespace is
in its Kubernetes provider's (the resource's `provider` props), unknown where the pack cannot tell.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from pulumi_policy import PolicyResource, ReportViolation, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from components.accelerators import SCHEDULING
from router_image.config import AuthConfig
from components.spec import MAX_ENDPOINT_VERSIONS

COMPONENT = "app.kubernetes.io/component"
ENDPOINT = "aks-model-serving/endpoint"
CLUSTER_PURPOSE = "aks-model-serving/cluster-purpose"
INTERNAL_LB = "service.beta.kubernetes.io/azure-load-balancer-internal"
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the label Kubernetes (1.22+) puts on every namespace: its name
ROUTER_CONFIG_KEY = "config.json"

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
REGISTRY = "azure-native:containerregistry:Registry"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CLUSTER = "azure-native:containerservice:ManagedCluster"
ENFORCING_ENGINES = {"calico", "azure", "cilium"}  # AKS's networkPolicy values other than none
# pulumi-kubernetes also declares each kind as `<Kind>Patch` (server-side apply of a part of an object
# someone else made): a patch can add an HPA or a container as surely as the object itself.
# What sets a Deployment's replica count from a metric: an HPA, and a KEDA ScaledObject (a CustomResource),
# which runs an HPA of its own. A VerticalPodAutoscaler changes requests, not replicas: it is not one.
AUTOSCALER_TYPES = {f"kubernetes:{kind}{patch}"
                    for kind in [f"autoscaling/{v}:HorizontalPodAutoscaler" for v in ("v1", "v2", "v2beta1", "v2beta2")]
                    + ["keda.sh/v1alpha1:ScaledObject"]
                    for patch in ("", "Patch")}

_TEMPLATE = ("spec", "template", "spec")
# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    f"kubernetes:{kind}{patch}": path
    for kind, path in {
        "core/v1:Pod": ("spec",),
        "core/v1:PodTemplate": ("template", "spec"),
        "core/v1:ReplicationController": _TEMPLATE,
        "apps/v1:Deployment": _TEMPLATE,
        "apps/v1:StatefulSet": _TEMPLATE,
        "apps/v1:DaemonSet": _TEMPLATE,
        "apps/v1:ReplicaSet": _TEMPLATE,
        "batch/v1:Job": _TEMPLATE,
        "batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    }.items()
    for patch in ("", "Patch")
}

# Cluster add-ons AksCluster installs from their publishers, pinned by version: exempt unless a
# stack's `allowedImages` says otherwise (mirror them into the registry and drop them from it).
ADDON_IMAGES = ["nvcr.io/nvidia/k8s-device-plugin:v0.17.1", "busybox:1.36.1"]

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A content hash as a tag: HashedImage's tags are hex digests of what went into the image. At least one
# letter: an all-digit tag is a date or a build number (moving, like `latest`), and a real digest of
# 12 or more hex digits is all digits with odds under 1 in 280.
_HASH_TAG = re.compile(r"^(?=[0-9]*[a-f])[0-9a-f]{12,64}$")

T = TypeVar("T")
# _assuming's answer where a rule must tell a value a first preview does not know from an absent one.
UNKNOWN = object()


# ---------------------------------------------------------------- helpers


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _assuming(answer: T, check: Callable[[], T]) -> T:
    """check()'s result, or `answer` where it reads a value a first preview does not know yet.

    pulumi-policy raises on reading one, and a raise turns the whole rule (for a stack rule, every
    resource) into one advisory note, known values and unknown alike: catching it around the one check
    that read it lets the rule go on with the rest. `answer` is that check's conservative reading, the
    one that reports nothing: an unknown value is checked once it is known, when the update runs the pack.
    """
    try:
        return check()
    except UnknownValueError:
        return answer


def _known(obj: Any, *path: str) -> Any:
    """The value at `path`, None where it is absent or a first preview does not know it yet."""
    return _assuming(None, lambda: _get(obj, *path))


def _label(props: Mapping[str, Any], key: str) -> Any:
    return _known(props, "metadata", "labels", key)


def _namespace(resource: PolicyResource) -> str:
    """The namespace an object lands in, in pulumi-kubernetes' order: its own, else its provider's `namespace`,
    else that of the provider's kubeconfig context (its `context` or the current one), else `default`.

    Where the pack cannot know it (no provider said, as in the offline plan; no kubeconfig file to read; a
    context it lacks), it raises as a first preview's unknown value does: each rule reads that as "may be
    any", the reading that reports nothing. `default` would be a guess, and a wrong one put a guard or an
    HPA beside the wrong Deployment.
    """
    own = _get(resource.props, "metadata", "namespace")
    if own:
        return own
    if resource.provider is None:
        raise UnknownValueError(UNKNOWN_STRING_VALUE, ["metadata", "namespace"])
    provider = resource.provider.props
    if namespace := _get(provider, "namespace"):
        return namespace
    kubeconfig = _kubeconfig(_get(provider, "kubeconfig"))
    if kubeconfig is not None and (namespace := _context_namespace(kubeconfig, _get(provider, "context"))):
        return namespace
    raise UnknownValueError(UNKNOWN_STRING_VALUE, ["metadata", "namespace"])


def _kubeconfig(given: Any) -> str | None:
    """The provider's kubeconfig as pulumi-kubernetes finds it: `kubeconfig` as text, or the path of a file, else
    $KUBECONFIG's first file, else ~/.kube/config (the pack runs on the machine that runs `pulumi`); None where
    there is no such file."""
    if isinstance(given, str) and ("\n" in given or given.lstrip().startswith("{")):
        return given
    path = given if isinstance(given, str) and given else (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
                                                           or "~/.kube/config")
    try:
        return Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError):
        return None


@functools.lru_cache(maxsize=8)
def _context_namespace(kubeconfig: str, context: str | None) -> str | None:
    """The namespace of a kubeconfig's `context` (else its current one), `default` where it names none; None
    where the text is no kubeconfig (the path of one) or lacks that context. Cached: every resource declared
    with one provider asks with the same text."""
    try:
        config = yaml.safe_load(kubeconfig)
    except yaml.YAMLError:
        return None
    if not isinstance(config, Mapping):
        return None
    name = context or config.get("current-context")
    found = next((c for c in config.get("contexts") or [] if isinstance(c, Mapping) and c.get("name") == name), None)
    return None if found is None else _get(found, "context", "namespace") or "default"


def _name(props: Mapping[str, Any], fallback: str) -> str:
    return _known(props, "metadata", "name") or fallback


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec of a workload, None for anything that runs no pods or whose spec a first preview does
    not know (a Job made from outputs): it is checked when the update runs the pack."""
    path = POD_SPEC_PATHS.get(resource_type)
    return _known(props, *path) if path else None


def _items(obj: Any, *path: str) -> Iterator[Any]:
    """The elements of the list at `path` that a preview knows: in a first preview the whole list or one
    element may be unknown (made from an output), and skipping just that one checks the others."""
    listed = _known(obj, *path) or []
    for i in range(len(listed)):
        item = _assuming(UNKNOWN, lambda: listed[i])
        if item is not UNKNOWN:
            yield item


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The pod's init and app containers that a preview knows (init containers made from an output, say)."""
    for key in ("initContainers", "containers"):
        yield from _items(spec, key)


def _quantity_positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return value is not None


# ---------------------------------------------------------------- resource rules


def requests_and_limits(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """Every container states cpu and memory requests and limits.

    Without requests the scheduler packs replicas blindly; without limits one model can starve
    its neighbours on the node. A request left out is its limit (Kubernetes copies it), stated alike.
    """
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for c in containers(spec):
        def stated(kind: str, res: str) -> bool:
            return _assuming(True, lambda: _get(c, "resources", kind, res) not in (None, ""))
        missing = [f"{kind}.{res}" for kind in ("requests", "limits") for res in ("cpu", "memory")
                   if not stated(kind, res) and not (kind == "requests" and stated("limits", res))]
        if missing:
            report_violation(f"container {_known(c, 'name')!r} has no resources {', '.join(missing)}", None)


def registry_images(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """Images come from the workspace's registry, pinned by digest or a content-hash tag.

    `latest` or a hand-written tag can change under a running service; a hash cannot. A stack rule, so
    that the registry is the stack's own: config `registry` (the login server), else the loginServer of
    the stack's Registry when known (a registry not created yet has none in a preview: then any
    *.azurecr.io). `allowedImages`: images exempted (default ADDON_IMAGES, the cluster add-ons), see _exempts.
    """
    config = args.get_config()
    registry = config.get("registry") or next(
        (login for r in args.resources if r.resource_type == REGISTRY and (login := _known(r.props, "loginServer"))), None)
    allowed = config.get("allowedImages", ADDON_IMAGES)
    for r in args.resources:
        spec = pod_spec(r.resource_type, r.props)
        for c in containers(spec) if spec is not None else []:
            image = _assuming(None, lambda: c.get("image") or "")
            if image is None:  # built by this update: checked when the update runs this rule, known
                continue
            if not any(_exempts(entry, image) for entry in allowed):
                problem = _image_problem(image, registry)
                if problem:
                    report_violation(f"{_name(r.props, r.name)}: container {_known(c, 'name')!r}: image {image!r} {problem}",
                                     r.urn)


def _exempts(entry: str, image: str) -> bool:
    """Whether an `allowedImages` entry exempts an image: one naming a tag or digest, that image alone (a
    digest beside the tag too); any other, a registry path, the images under it and its repository's own.
    A tag as a prefix exempted every longer tag: `busybox:1.36.1` let `busybox:1.36.1-musl` through unpinned;
    a path as a bare prefix, every name beginning alike: `mcr.microsoft.com` let `mcr.microsoft.com.evil.io/x`."""
    if ":" in entry.rsplit("/", 1)[-1] or "@" in entry:
        return image == entry or image.startswith(entry + "@")
    path = entry.rstrip("/")
    return image.startswith(path) and image[len(path):][:1] in (("/",) if entry.endswith("/") else ("", "/", ":", "@"))


def _image_problem(image: str, registry: str | None) -> str | None:
    host = image.split("/", 1)[0] if "/" in image else ""
    host = host.removesuffix(":443")  # the registry itself, as docker pulls it: HTTPS's port
    if registry and host != registry:
        return f"is not from the workspace registry {registry}"
    if not registry and not host.endswith(".azurecr.io"):
        return "is not from an Azure Container Registry"
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1].split("@", 1)[0]  # its tag, not the hex of a digest _DIGEST refused
    tag = last.split(":", 1)[1] if ":" in last else ""
    if not _HASH_TAG.match(tag):
        return f"is {'untagged' if not tag else f'tagged {tag!r}'}; pin it by digest or a content-hash tag"
    return None


def gpu_scheduling(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    """A container asking for GPU (or FPGA) cores tolerates and selects that pool.

    Without the toleration the pod never fits the tainted pool; without the selector it may
    land, and idle, on a node whose device plugin it cannot use.
    """
    spec = pod_spec(args.resource_type, args.props)
    if spec is None:
        return
    for kind, sched in SCHEDULING.items():
        wanting = [_known(c, "name") for c in containers(spec)
                   if any(_quantity_positive(_known(c, "resources", part, sched.resource)) for part in ("limits", "requests"))]
        if not wanting:
            continue
        # A toleration or selector a first preview does not know may be the right one: it passes.
        problems = []
        if not _assuming(True, lambda: any(_tolerates(t, sched.toleration) for t in spec.get("tolerations") or [])):
            problems.append(f"no toleration for {sched.taint}")
        if not _assuming(True, lambda: _selects(spec, sched.label_key, sched.label_value)):
            problems.append(f"no node selector {sched.label_key}={sched.label_value}")
        if problems:
            report_violation(f"containers {', '.join(map(repr, wanting))} ask for {sched.resource} but the pod has "
                             + " and ".join(problems), None)


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    """Kubernetes' matching: an empty key with Exists tolerates every taint, an empty effect every effect."""
    if toleration.get("effect") not in (None, "", taint["effect"]):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, "", taint["key"])
    return toleration.get("key") == taint["key"] and toleration.get("value") == taint["value"]


def _selects(spec: Mapping[str, Any], key: str, value: str) -> bool:
    if (spec.get("nodeSelector") or {}).get(key) == value:
        return True
    terms = _get(spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms") or []
    return bool(terms) and all(_pins(term.get("matchExpressions") or [], key, value) for term in terms)


def _pins(expressions: list[Mapping[str, Any]], key: str, value: str) -> bool:
    """Whether a term's expressions, AND-ed, let `key` have `value` and nothing else: `In [gpu, other]`
    alone lets the pod land on the other pool."""
    own = [e for e in expressions if e.get("key") == key]
    allowed: set[Any] | None = None
    for e in own:
        if e.get("operator") == "In":
            values = set(e.get("values") or [])
            allowed = values if allowed is None else allowed & values
    for e in own:
        if allowed is not None and e.get("operator") == "NotIn":
            allowed -= set(e.get("values") or [])
    return allowed == {value}


def _matches(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """Kubernetes' label selector: matchLabels and matchExpressions both hold ({} selects every pod)."""
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        held = {"In": key in labels and labels[key] in values, "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not held:
            return False
    return True


def _allowed(selector: Mapping[str, Any], key: str) -> set[Any] | None:
    """The values a label selector lets `key` have (by matchLabels and `In`), None where it lets it have any."""
    held = selector.get("matchLabels") or {}
    sets = [{held[key]}] if key in held else []
    sets += [set(e.get("values") or []) for e in selector.get("matchExpressions") or []
             if e.get("key") == key and e.get("operator") == "In"]
    return set.intersection(*sets) if sets else None


def _narrows(selector: Mapping[str, Any], required: Mapping[str, Any]) -> bool:
    """Whether everything a label selector matches, the `required` selector (not empty) matches too: each
    of its labels and `In` terms pinned within their values, each of its other terms (NotIn, Exists,
    DoesNotExist) written alike. A Deployment's selector is all of it: pods carrying its matchLabels alone
    need not be the ones its matchExpressions pick."""
    expressions = list(required.get("matchExpressions") or [])
    pinned = [(key, {value}) for key, value in (required.get("matchLabels") or {}).items()]
    pinned += [(e.get("key"), set(e.get("values") or [])) for e in expressions if e.get("operator") == "In"]
    own = {_term(e) for e in selector.get("matchExpressions") or []}
    return bool(pinned or expressions) and all(
        (allowed := _allowed(selector, key)) is not None and allowed <= values for key, values in pinned) and all(
        _term(e) in own for e in expressions if e.get("operator") != "In")


def _term(expression: Mapping[str, Any]) -> tuple[Any, Any, frozenset[Any]]:
    """A matchExpressions entry, comparable (its values in any order)."""
    return expression.get("key"), expression.get("operator"), frozenset(expression.get("values") or [])


def _router_only(peer: Mapping[str, Any], namespace: str, workloads: list[PolicyResource]) -> bool:
    """A `from` peer that admits the router's pods and nothing else, `workloads` being the stack's.

    Kubernetes' selectors: a podSelector alone picks pods of the policy's namespace; beside a namespaceSelector
    (AND), pods of the namespaces that one picks, here by name (`kubernetes.io/metadata.name`); a
    namespaceSelector alone, every pod there; an ipBlock, any address. The router's pods: those a router
    Deployment of the stack (labelled `component: router`) owns by its selector, in its namespace. A label
    alone names no router: pods the stack does not declare (another chart's `component: router`) carry it
    too. A selector is no pod's own either: the peer must pick none of the stack's other workloads' pods
    there (a model's pods carrying the labels a router Deployment selects by would reach the scorer past its
    auth). A pack cannot see pods made outside the stack with the router Deployment's own labels: RBAC limits
    who may create pods in the router's namespace.
    """
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if pods is None or not set(peer) <= {"podSelector", "namespaceSelector"}:
        return False
    names = {namespace} if namespaces is None else _allowed(namespaces, NAMESPACE_NAME)
    # Read as they are: a Deployment whose labels a first preview does not know may be a router (the raise
    # passes the peer, to be checked once known).
    routers = [r for r in workloads if r.resource_type == DEPLOYMENT and _get(r.props, "metadata", "labels", COMPONENT) == "router"]
    others = [w for w in workloads if not any(w is r for r in routers)]
    return names is not None and all(
        any(_narrows(pods, _get(r.props, "spec", "selector") or {}) and _namespace(r) == name for r in routers)
        and not any(_picks_other(pods, name, w) for w in others)
        for name in names)


def _picks_other(selector: Mapping[str, Any], namespace: str, workload: PolicyResource) -> bool:
    """Whether a workload runs pods in `namespace` that a peer's podSelector picks and that are not the
    router's (a workload of the stack whose pods it labels `component: router` declares them its router's);
    False where a first preview does not know its pods' labels or namespace."""
    def picked() -> bool:
        labels = _get(workload.props, *POD_SPEC_PATHS[workload.resource_type][:-1], "metadata", "labels") or {}
        return _namespace(workload) == namespace and _matches(selector, labels) and labels.get(COMPONENT) != "router"
    return _assuming(False, picked)


def _metrics_ports(deployment: Mapping[str, Any]) -> set[Any]:
    """The model pods' declared metrics port, by number and name: their TCP container ports named `metrics`.

    Those of native sidecars too (init containers with restartPolicy Always, Kubernetes 1.29+), which serve
    beside the app containers; other init containers have exited by then. A UDP or SCTP `metrics` port is
    not it: the same number over TCP may be the scorer's.
    """
    spec = _get(deployment, "spec", "template", "spec")
    served = [c for c in _get(spec, "initContainers") or [] if c.get("restartPolicy") == "Always"]
    return {v for c in served + list(_get(spec, "containers") or []) for p in c.get("ports") or []
            if p.get("name") == "metrics" and p.get("protocol") in (None, "TCP") for v in (p.get("containerPort"), "metrics")}


def _guards(policy: PolicyResource, deployment: PolicyResource) -> bool:
    """Whether a NetworkPolicy isolates a Deployment's pods for ingress."""
    return (_namespace(policy) == _namespace(deployment)
            and "Ingress" in (_get(policy.props, "spec", "policyTypes") or ["Ingress"])
            and _matches(_get(policy.props, "spec", "podSelector") or {},
                         _get(deployment.props, "spec", "template", "metadata", "labels") or {}))


def _opened_to_others(rule: Mapping[str, Any], deployment: Mapping[str, Any], namespace: str,
                      workloads: list[PolicyResource]) -> str | None:
    """The ports an ingress rule of a policy in `namespace` admits pods other than the router's to beyond
    the Deployment's metrics port, as written; None when it admits none. A peer naming a router whose
    namespace a first preview does not know may be the router's, and the rule's other peers still count."""
    peers = rule.get("from") or []
    if peers and all(_assuming(True, lambda: _router_only(peer, namespace, workloads)) for peer in peers) or _admits_only(rule, _metrics_ports(deployment)):
        return None
    return _ports_text(rule)


def _tcp(ports: Any) -> list[Any]:
    """The entries of a rule's ports that admit TCP, the scorer's protocol: all but those known to be another
    (UDP, SCTP); an entry without a protocol is TCP."""
    return [p for p in ports if p.get("protocol") not in ("UDP", "SCTP")]


def _admits_only(rule: Mapping[str, Any], allowed: set[Any]) -> bool:
    """Whether an ingress rule admits TCP connections to the `allowed` ports alone (a rule without ports
    admits every port; a port without a number, every port of its protocol; a range, more than one)."""
    ports = rule.get("ports") or []
    return bool(ports) and all(p.get("port") in allowed and p.get("endPort") in (None, p.get("port")) for p in _tcp(ports))


def _ports_text(rule: Mapping[str, Any]) -> str:
    """An ingress rule's TCP ports as written (numbers arrive as floats)."""
    def text(value: Any) -> str:
        return str(int(value)) if isinstance(value, float) else str(value)
    ports = rule.get("ports") or []
    if not ports or any(p.get("port") is None for p in _tcp(ports)):
        return "every port"
    return "port " + ", ".join(text(p["port"]) + (f"-{text(p['endPort'])}" if p.get("endPort") is not None else "")
                               for p in _tcp(ports))


# ---------------------------------------------------------------- stack rules


def no_hpa_on_models(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """No HorizontalPodAutoscaler or KEDA ScaledObject targets a model Deployment: the router scales those.

    Either would fight the router's utilization autoscaler over the replica count (a ScaledObject through
    the HPA KEDA makes for it). A target is matched by kind and name, whatever its apiVersion (`apps/v1`,
    or an old `extensions/v1beta1` that still names the Deployment); a ScaledObject's kind defaults to
    Deployment. In a first preview a model whose namespace is unknown, or an autoscaler whose namespace or
    target is, may or may not be a match: it passes, to be checked once known, and the known ones are still
    matched.
    """
    models = {model for r in args.resources if r.resource_type == DEPLOYMENT and _label(r.props, COMPONENT) == "model"
              and (model := _assuming(None, lambda: (_namespace(r), _name(r.props, r.name)))) is not None}
    for r in args.resources:
        if r.resource_type not in AUTOSCALER_TYPES:
            continue
        default_kind = "Deployment" if "ScaledObject" in r.resource_type else None
        target = _assuming(None, lambda: (_namespace(r), _get(r.props, "spec", "scaleTargetRef", "name"))
                           if (_get(r.props, "spec", "scaleTargetRef", "kind") or default_kind) == "Deployment" else None)
        if target in models:
            kind = r.resource_type.rsplit(":", 1)[1].removesuffix("Patch")
            report_violation(f"{kind} {_name(r.props, r.name)!r} targets the model Deployment "
                             f"{target[1]!r}; the router scales model deployments, remove the {kind}", r.urn)


def endpoint_versions(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """An endpoint holds at most 6 versions (Azure ML's limit), counted from its Deployments.

    A version whose namespace a first preview does not know is counted in no endpoint (it may be another
    namespace's), to be counted once known.
    """
    versions: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in args.resources:
        if r.resource_type != DEPLOYMENT:  # first: another resource's metadata may be unknown in a first preview
            continue
        endpoint = _label(r.props, ENDPOINT)
        if endpoint and _label(r.props, COMPONENT) == "model" and (
                namespace := _assuming(None, lambda: _namespace(r))) is not None:
            versions[(namespace, endpoint)].append(r)
    for (_, endpoint), deployments in sorted(versions.items()):
        if len(deployments) > MAX_ENDPOINT_VERSIONS:
            report_violation(f"endpoint {endpoint!r} has {len(deployments)} versions; at most {MAX_ENDPOINT_VERSIONS}",
                             deployments[MAX_ENDPOINT_VERSIONS].urn)


def _public_routers(args: StackValidationArgs) -> Iterator[tuple[Any, dict | None, Any]]:
    """Each public router Service with its namespace's router config (None when not found) and its cluster purpose.

    A router Service: one labelled so, or any whose selector picks a router Deployment's pods (Kubernetes sends
    a Service's traffic by its selector, whatever its labels); its purpose is its own label, else its pods'.
    A router a first preview does not know enough of (whether it is public, its namespace, its config: a
    config made from outputs) is left out, to be checked once known, rather than faulted for it.
    """
    configs: dict[Any, Any] = {}  # namespace -> config; UNKNOWN for either where a first preview does not know it
    for r in args.resources:
        if r.resource_type == CONFIG_MAP and _label(r.props, COMPONENT) == "router":
            raw: Any = _assuming(UNKNOWN, lambda: _get(r.props, "data", ROUTER_CONFIG_KEY))
            if raw:  # the router's other ConfigMaps hold no config
                configs[_assuming(UNKNOWN, lambda: _namespace(r))] = raw if raw is UNKNOWN else json.loads(raw)
    routers = [r for r in args.resources if r.resource_type == DEPLOYMENT and _label(r.props, COMPONENT) == "router"]
    for r in args.resources:
        if r.resource_type != SERVICE:
            continue
        if not _assuming(False, lambda: _get(r.props, "spec", "type") == "LoadBalancer"
                         and str(_get(r.props, "metadata", "annotations", INTERNAL_LB)) != "true"):
            continue
        namespace = _assuming(UNKNOWN, lambda: _namespace(r))
        if namespace is UNKNOWN:
            continue
        pods = _router_pods(r, namespace, routers)
        if _label(r.props, COMPONENT) != "router" and pods is None:
            continue
        if UNKNOWN in configs or configs.get(namespace) is UNKNOWN:
            continue  # (a config in a namespace a first preview does not know may be this router's)
        yield r, configs.get(namespace), _label(r.props, CLUSTER_PURPOSE) or (pods or {}).get(CLUSTER_PURPOSE)


def _router_pods(service: PolicyResource, namespace: str, routers: list[PolicyResource]) -> Mapping[str, Any] | None:
    """The labels of the router pods a Service in `namespace` selects, None where it selects none a preview knows
    (a Service without a selector sends to the endpoints written for it, none of the stack's)."""
    selector = _known(service.props, "spec", "selector")
    if not selector:
        return None
    for router in routers:
        labels = _assuming(None, lambda: _namespace(router) == namespace
                           and dict(_get(router.props, "spec", "template", "metadata", "labels") or {}))
        if labels and _assuming(False, lambda: selector.items() <= labels.items()):
            return labels
    return None


def public_router_tls(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """A router on a public address in a production cluster (fast_prod or dense_prod) serves TLS
    (Azure ML's production rule)."""
    for service, config, purpose in _public_routers(args):
        if purpose not in ("fast_prod", "dense_prod"):
            continue
        if config is None:
            report_violation(f"router Service {_name(service.props, service.name)!r} is public but its config was not found", service.urn)
        elif not config.get("tls"):
            report_violation(f"router Service {_name(service.props, service.name)!r} is public in a {purpose} cluster and "
                             "serves plain HTTP; set cluster.ssl (certificate, leaf_domain_label or cert_manager_issuer)", service.urn)


def public_auth(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """Behind a public router every service and endpoint asks for a key or a token.

    A stack opts a route out by name with the policy config `allowAnonymous: [names]`.
    """
    allowed = set(args.get_config().get("allowAnonymous") or [])
    for service, config, _ in _public_routers(args):
        for route in (config or {}).get("routes") or []:
            if route.get("name") in allowed or _asks_for_auth(route):
                continue
            report_violation(f"{route.get('kind')} {route.get('name')!r} is reachable without auth on the public router "
                             f"{_name(service.props, service.name)!r}; enable auth or list it in allowAnonymous", service.urn)


def _asks_for_auth(route: Mapping[str, Any]) -> bool:
    """Whether the router asks a route's callers for a key or token, reading `auth` with its own schema: its
    default is key auth, and it takes "false" or 0 for off, which truthiness took for on. An `auth` the router
    refuses is no auth the pack can vouch for."""
    try:
        auth = AuthConfig.model_validate(route.get("auth", {}))
    except ValidationError:
        return False
    return auth.key_enabled or auth.token_enabled


def models_admit_only_the_router(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    """Only the router's pods reach a model's pods, and a cluster in the stack enforces NetworkPolicies.

    The scorer asks for no key or token (the router does): any other pod reaching it would score past
    auth, the traffic split and the queue. A pod is isolated once a policy selects it for Ingress, and
    then admits the union of those policies' rules, so every rule of every such policy must name router
    pods only, or admit the pods' declared `metrics` port alone (it serves /metrics and nothing else, so
    Prometheus may reach it from anywhere). Any other port, whatever its name (a gRPC port too), scores.
    Pods on their node's network (hostNetwork) no policy isolates (Kubernetes leaves them to the plugin,
    and AKS's engines leave them open): whatever guards them, they fault.

    In a first preview, whatever a value it does not know yet decides passes, to be checked once known:
    a Deployment is unguarded only when every policy is known not to select it (a policy whose
    namespace, types or selector is unknown, or pods whose labels are, may be its guard), a rule faults
    only when its peers, ports, the pods' metrics port and the router namespaces it names are known, and
    a known guard's known rules are checked whatever else is unknown.
    """
    policies = [p for p in args.resources if p.resource_type == NETWORK_POLICY]
    workloads = [r for r in args.resources if r.resource_type in POD_SPEC_PATHS]
    for r in args.resources:
        if r.resource_type != DEPLOYMENT or _label(r.props, COMPONENT) != "model":
            continue
        name = _name(r.props, r.name)
        if _assuming(False, lambda: _get(r.props, *_TEMPLATE, "hostNetwork") is True):
            report_violation(f"the pods of model Deployment {name!r} run on their node's network (hostNetwork), where no "
                             "NetworkPolicy isolates them: any pod can reach its scorer past the router's auth", r.urn)
        guards = [(p, _assuming(None, lambda: _guards(p, r))) for p in policies]
        if all(guarding is False for _, guarding in guards):
            report_violation(f"the pods of model Deployment {name!r} are selected by no ingress NetworkPolicy: any pod "
                             "in the cluster can reach its scorer past the router's auth", r.urn)
        for p in (p for p, guarding in guards if guarding):
            for rule in _items(p.props, "spec", "ingress"):
                if opened := _assuming(None, lambda: _opened_to_others(rule, r.props, _namespace(p), workloads)):
                    report_violation(f"NetworkPolicy {_name(p.props, p.name)!r} admits pods other than the router's to "
                                     f"model Deployment {name!r} on {opened}; only its `metrics` port may admit them", p.urn)
                    break
    for r in args.resources:
        if r.resource_type == CLUSTER and not _assuming(
                True, lambda: _get(r.props, "networkProfile", "networkPolicy") in ENFORCING_ENGINES):
            report_violation(f"cluster {r.name!r} enforces no NetworkPolicy (networkProfile.networkPolicy is "
                             f"{_known(r.props, 'networkProfile', 'networkPolicy')!r}); set cluster.network.policy", r.urn)


ResourceRule = Callable[[ResourceValidationArgs, ReportViolation], None]
StackRule = Callable[[StackValidationArgs, ReportViolation], None]

# name -> (description, function, config schema properties): the pack and the plan both read this.
RESOURCE_RULES: dict[str, tuple[str, ResourceRule, dict[str, dict]]] = {
    "containers-have-requests-and-limits": ("Every container states cpu and memory requests and limits.", requests_and_limits, {}),
    "gpu-containers-tolerate-and-select-gpu-pool": ("GPU/FPGA containers tolerate and select their accelerator pool.", gpu_scheduling, {}),
}
STACK_RULES: dict[str, tuple[str, StackRule, dict[str, dict]]] = {
    "no-hpa-on-model-deployments": (
        "No HorizontalPodAutoscaler or KEDA ScaledObject targets a model Deployment; the router scales them.", no_hpa_on_models, {}),
    "public-router-serves-tls-in-production": ("A public router serves TLS in a fast_prod or dense_prod cluster.", public_router_tls, {}),
    "auth-on-for-public-services": (
        "Services and endpoints behind a public router require a key or token, unless allowed by name.",
        public_auth,
        {"allowAnonymous": {"type": "array", "items": {"type": "string"}}},
    ),
    "at-most-six-versions-per-endpoint": ("An endpoint holds at most 6 versions.", endpoint_versions, {}),
    "model-pods-admit-only-the-router": ("Only the router's pods reach model pods, and the cluster enforces NetworkPolicies.",
                                         models_admit_only_the_router, {}),
    "images-from-workspace-registry": (
        "Images come from the workspace registry, pinned by digest or content-hash tag (no latest).",
        registry_images,
        {"registry": {"type": "string"}, "allowedImages": {"type": "array", "items": {"type": "string"}}},
    ),
}
