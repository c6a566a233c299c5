"""ModelRouter: the scoring front end on the cluster (azureml-fe's place in Azure ML).

Namespace, a ServiceAccount whose Role allows only what the router does (watch EndpointSlices,
scale the model Deployments, hold the autoscaling Lease), its RouterConfig as a ConfigMap, the
keys / TLS / peer Secrets, the token-signing public key, a Deployment spread across nodes with a
PodDisruptionBudget, and a LoadBalancer Service with an Azure DNS label. No HPA: as azureml-fe
does, the router scales itself, out when its routing latency or CPU rises and in when CPU falls
(`RouterScaleConfig`, decided by the pods' scaling leader, which patches this Deployment's scale
as it does the models'); an HPA needs a custom-metrics adapter for latency and would fight it.

The ConfigMap and key Secret are mounted as whole volumes, never through subPath and never
hashed into the pod template: the kubelet refreshes the files and the router reloads them, so a
new route or a rotated key rolls no pod.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumi_tls as tls

from components.service import (
    CONTAINER_SECURITY,
    LABEL_NAME,
    LABEL_PART_OF,
    PART_OF,
    POD_SECURITY,
    PRE_STOP,
    PRE_STOP_S,
    ROUTER_PODS,
    SECRET_FILE_MODE,
    RouteAccess,
    cpu_quantity,
    disruption_budget,
    memory_quantity,
    owned_count,
    spread,
)
from components.regions import region_name
from components.spec import ROUTER_NAME, AuthSettings, ClusterPurpose, RouterSpec, SslSpec, cluster_purpose
from router_image.config import (
    AutoscaleConfig,
    PeersConfig,
    RouteConfig,
    RouterConfig,
    RouterScaleConfig,
    TlsConfig,
    TokenConfig,
)

NAME = ROUTER_NAME
STOP_MARGIN_S = 5  # after the drain: the server closing its connections and the process exiting
PEERS = f"{NAME}-peers"
LABEL_CLUSTER_PURPOSE = "aks-model-serving/cluster-purpose"
INTERNAL_LB = "service.beta.kubernetes.io/azure-load-balancer-internal"
DNS_LABEL = "service.beta.kubernetes.io/azure-dns-label-name"
CONFIG_DIR = "/etc/model-router/config"
CONFIG_FILE = "config.json"
KEYS_DIR = "/etc/model-router/keys"
TOKEN_DIR = "/etc/model-router/token"
TLS_DIR = "/etc/model-router/tls"
PEERS_DIR = "/etc/model-router/peers"
PEERS_SECRET = "secret"
TOKEN_PUBLIC = "signing-key.pub.pem"
KEY_LENGTH = 32
# The router scales out on CPU or routing latency (RouterScaleConfig's threshold) as azureml-fe
# does; in again only after CPU stayed low a while (as an HPA's default window).
CPU_TARGET_PERCENT = 70
CPU_WINDOW_S = 15
SCALE_DOWN_WINDOW_S = 300


@dataclass
class ModelRouterArgs:
    """The router's inputs: its spec, the routes it serves and the cluster it sits in.

    `auth` holds each key-auth route's settings by RouteConfig.key_id (given keys or the
    primary_ or secondary_key_rotation counter); `keys`, a route's (primary, secondary) from other resources (a Key
    Vault's secrets), by the same id, wins over them. `service_annotations` are the cluster's LoadBalancer annotations
    (internal load balancer + subnet). `location` names the Azure region of a DNS label: a plain
    string, as the names built from it are known before anything is created. `create_namespace`
    false: the namespace (spec.namespace) is the platform's, made elsewhere. `certificate`, the
    (certificate, key) PEMs of `ssl.cname` from other resources (a Key Vault's secrets), as secrets.
    """

    spec: RouterSpec
    routes: Sequence[RouteConfig]
    image: pulumi.Input[str]
    cluster_purpose: ClusterPurpose
    location: str
    auth: Mapping[str, AuthSettings] = field(default_factory=dict)
    ssl: SslSpec | None = None
    service_annotations: Mapping[str, str] = field(default_factory=dict)
    create_namespace: bool = True
    keys: Mapping[str, tuple[pulumi.Input[str], pulumi.Input[str]]] = field(default_factory=dict)
    certificate: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None

    def __post_init__(self) -> None:
        self.cluster_purpose = cluster_purpose(self.cluster_purpose)
        # One value (a string, an Output) where a pair goes was indexed as the pair: its first two characters.
        pairs = {f"keys[{key_id!r}]": (pair, "(primary, secondary)") for key_id, pair in self.keys.items()}
        if self.certificate is not None:
            pairs["certificate"] = (self.certificate, "(certificate, key)")
        for where, (pair, what) in pairs.items():
            sequence = isinstance(pair, (tuple, list))
            if not sequence or len(pair) != 2:
                given = f"a {type(pair).__name__} of {len(pair)}" if sequence else f"one {type(pair).__name__}"
                raise TypeError(f"ModelRouterArgs.{where}: a {what} pair, not {given}")
        cname = self.ssl.cname if self.ssl is not None else None
        pem = self.ssl is not None and self.ssl.certificate is not None
        if self.certificate is not None and (cname is None or pem):
            raise ValueError("ModelRouterArgs.certificate: the certificate and key of ssl.cname, given with no "
                             "ssl.certificate and ssl.key (SslSpec(cname=...))")
        if cname is not None and not pem and self.certificate is None:
            raise ValueError(f"ModelRouterArgs.certificate: ssl.cname {cname!r} has no certificate and key; give them "
                             "here (from other resources: a Key Vault's secrets) or as ssl.certificate and ssl.key")
        # Else ignored: the keys given there served no route, and random ones did.
        key_auth = {r.key_id for r in self.routes if r.auth.key_enabled}
        for field_name, given, known, kind in (("keys", self.keys, key_auth, "key-auth route"),
                                               ("auth", self.auth, {r.key_id for r in self.routes}, "route")):
            unknown = sorted(set(given) - known)
            if unknown:
                raise ValueError(f"ModelRouterArgs.{field_name}: {', '.join(unknown)} is no {kind}'s key_id "
                                 "(<service|endpoint>.<name>, e.g. service.iris)")
        if not isinstance(self.location, str):
            raise TypeError(f"ModelRouterArgs.location: a plain string (e.g. 'westeurope'), not {type(self.location).__name__}")


def dns_host(spec: RouterSpec, ssl: SslSpec | None, location: str) -> str | None:
    """The name clients call, when it is known before the load balancer has an address."""
    if ssl is not None and ssl.cname:
        return ssl.cname
    label = dns_label(spec, ssl)
    return f"{label}.{region_name(location)}.cloudapp.azure.com" if label else None


def dns_label(spec: RouterSpec, ssl: SslSpec | None) -> str | None:
    """Azure ML's leaf_domain_label names the public address; else the router's dns_label."""
    return (ssl.leaf_domain_label if ssl is not None else None) or spec.dns_label


class ModelRouter(pulumi.ComponentResource):
    """The front end every service and endpoint is called through.

    Outputs: namespace, host (DNS name, else the load balancer's address), base_url,
    token_signing_key (secret: the private key that signs tokens the router accepts).
    `access(route)` gives a route's URIs and keys.
    """

    namespace: pulumi.Output[str]
    host: pulumi.Output[str]
    base_url: pulumi.Output[str]
    token_signing_key: pulumi.Output[str]

    def __init__(self, name: str, args: ModelRouterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("aks-model-serving:index:ModelRouter", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        internal = args.service_annotations.get(INTERNAL_LB) == "true"  # exactly, as Azure reads it
        labels = {**ROUTER_PODS, LABEL_PART_OF: PART_OF, LABEL_CLUSTER_PURPOSE: args.cluster_purpose}
        selector = {LABEL_NAME: NAME}

        if args.create_namespace:
            # Kept by `destroy`: with server-side apply, declaring a namespace that exists adopts it (on an
            # attached cluster, `azureml` is the Azure ML extension's), and deleting it would delete what others
            # run there. What the stack put in it goes with the stack; on a cluster the stack made, all of it.
            ns = k8s.core.v1.Namespace(name, metadata={"name": spec.namespace, "labels": {LABEL_PART_OF: PART_OF}},
                                       opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True))
            self.namespace = ns.metadata.name
        else:
            self.namespace = pulumi.Output.from_input(spec.namespace)

        def meta(resource: str, **extra) -> dict:
            return {"name": resource, "namespace": self.namespace, "labels": labels, **extra}

        # ---- identity: only what routing and autoscaling need, only in this namespace
        account = k8s.core.v1.ServiceAccount(name, metadata=meta(NAME), opts=child)
        scales = args.cluster_purpose != "dev_test"  # a dev_test cluster keeps every count fixed
        autoscaled = scales and spec.max_replicas > spec.min_replicas
        own = {NAME} if autoscaled else set()
        # Every version's count is read (the router sizes its demand by it); only autoscaled ones are set.
        read = sorted({v.deployment for r in args.routes for v in r.versions} | own)
        scaled = sorted({v.deployment for r in args.routes for v in r.versions if scales and v.autoscale.enabled} | own)
        lease = PeersConfig(service=PEERS).lease_name
        rules = [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "update"]},
        ]
        # A rule with no resourceNames would cover every Deployment in the namespace: none is written then.
        if read:
            rules.append({"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": read, "verbs": ["get"]})
        if scaled:
            rules.append({"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": scaled, "verbs": ["patch"]})
        role = k8s.rbac.v1.Role(name, metadata=meta(NAME), rules=rules, opts=child)
        k8s.rbac.v1.RoleBinding(
            name, metadata=meta(NAME),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": account.metadata.name, "namespace": self.namespace}],
            opts=child)

        # ---- keys: given in the stack, else random; bumping primary_key_rotation (or secondary_) replaces that one
        self._served = {route.key_id for route in args.routes}
        self._keys: dict[str, tuple[pulumi.Output[str], pulumi.Output[str]]] = {}
        for route in args.routes:
            if not route.auth.key_enabled:
                continue
            settings = args.auth.get(route.key_id) or AuthSettings()
            given = args.keys.get(route.key_id)
            self._keys[route.key_id] = (
                (pulumi.Output.secret(given[0]), pulumi.Output.secret(given[1])) if given is not None else
                (self._key(name, route.key_id, "primary", settings), self._key(name, route.key_id, "secondary", settings)))
        key_data = {f"{key_id}.{which}": value for key_id, pair in self._keys.items()
                    for which, value in zip(("primary", "secondary"), pair)}
        keys_secret = k8s.core.v1.Secret(f"{name}-keys", metadata=meta(f"{NAME}-keys"), type="Opaque",
                                         string_data=key_data, opts=child)

        # ---- token signing: the current key signs; the router mounts only the public halves
        signing = [self._signing_key(name, generation, spec.token_algorithm)
                   for generation in signing_generations(spec.token_key_rotation)]
        # The private half is a stack output only: whoever reads the namespace's objects must not mint tokens.
        self.token_signing_key = pulumi.Output.secret(signing[0].private_key_pem)
        public_keys = pulumi.Output.all(*[key.public_key_pem for key in signing]).apply("".join)
        token_public = k8s.core.v1.ConfigMap(f"{name}-token", metadata=meta(f"{NAME}-token"),
                                             data={TOKEN_PUBLIC: public_keys}, opts=child)

        # ---- what peers send to read each other's load
        peer_secret = random.RandomPassword(f"{name}-peers", length=KEY_LENGTH, special=False, opts=child)
        peers_secret = k8s.core.v1.Secret(f"{name}-peers", metadata=meta(PEERS), type="Opaque",
                                          string_data={PEERS_SECRET: pulumi.Output.secret(peer_secret.result)},
                                          opts=child)

        # ---- the public face
        static_host = dns_host(spec, args.ssl, args.location)
        label = dns_label(spec, args.ssl)
        annotations = dict(args.service_annotations)
        if label and not internal:
            annotations[DNS_LABEL] = label
        serves_tls = args.ssl is not None
        port = RouterConfig.model_fields["port"].default
        service = k8s.core.v1.Service(
            name,
            metadata=meta(NAME, annotations=annotations),
            spec={"type": "LoadBalancer", "selector": selector,
                  "ports": [{"name": "https" if serves_tls else "http", "port": 443 if serves_tls else 80, "targetPort": "http"}]},
            opts=child)
        address = service.status.apply(_ingress_address)
        self.host = pulumi.Output.from_input(static_host) if static_host else address
        self.base_url = self.host.apply(lambda h: f"{'https' if serves_tls else 'http'}://{h}")
        tls_secret = self._tls(name, args.ssl, args.certificate, static_host, address, meta) if serves_tls else None

        # ---- the router's own configuration
        config = RouterConfig(
            backend="kubernetes",
            namespace=spec.namespace,
            host="0.0.0.0",
            port=port,
            tls=TlsConfig(cert_file=f"{TLS_DIR}/tls.crt", key_file=f"{TLS_DIR}/tls.key") if serves_tls else None,
            keys_dir=KEYS_DIR,
            token=TokenConfig(public_key_file=f"{TOKEN_DIR}/{TOKEN_PUBLIC}", algorithm=spec.token_algorithm),
            autoscale_enabled=scales,
            peers=PeersConfig(service=PEERS, port=port, secret_file=f"{PEERS_DIR}/{PEERS_SECRET}"),
            router_scale=RouterScaleConfig(
                deployment=NAME, cpu_cores=spec.cpu_cores,
                autoscale=AutoscaleConfig(min_replicas=spec.min_replicas, max_replicas=spec.max_replicas,
                                          target_utilization=CPU_TARGET_PERCENT, refresh_seconds=CPU_WINDOW_S,
                                          scale_down_delay_seconds=SCALE_DOWN_WINDOW_S)) if autoscaled else None,
            routes=list(args.routes),
        )
        config_map = k8s.core.v1.ConfigMap(f"{name}-config", metadata=meta(f"{NAME}-config"),
                                           data={CONFIG_FILE: config.dump()}, opts=child)
        # Peers find each other through this headless Service's EndpointSlices.
        k8s.core.v1.Service(
            f"{name}-peers", metadata=meta(PEERS),
            spec={"clusterIP": "None", "selector": selector, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
            opts=child)

        # ---- the pods
        scheme = "HTTPS" if serves_tls else "HTTP"
        volumes = [
            {"name": "config", "configMap": {"name": config_map.metadata.name}},
            {"name": "keys", "secret": {"secretName": keys_secret.metadata.name, "defaultMode": SECRET_FILE_MODE}},
            {"name": "token", "configMap": {"name": token_public.metadata.name}},
            {"name": "peers", "secret": {"secretName": peers_secret.metadata.name, "defaultMode": SECRET_FILE_MODE}},
        ]
        mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                  {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
                  {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
                  {"name": "peers", "mountPath": PEERS_DIR, "readOnly": True}]
        if tls_secret is not None:
            volumes.append({"name": "tls", "secret": {"secretName": tls_secret, "defaultMode": SECRET_FILE_MODE}})
            mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        resources = {"cpu": cpu_quantity(spec.cpu_cores), "memory": memory_quantity(spec.memory_gb)}
        container = {
            "name": "router",
            "image": args.image,
            "command": ["python", "-m", "router_image", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
            "ports": [{"name": "http", "containerPort": port}],
            # The Lease holder's identity and the name its peers skip in the EndpointSlices: the
            # pod's name from the API, not the hostname (cut to 63 characters).
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"requests": resources, "limits": resources},
            # It listens once it has read every version's replica count: with many versions and a slow API
            # server that outlasts the liveness probe's 30 s, which would restart it in a loop.
            "startupProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": scheme}, "periodSeconds": 2,
                             "failureThreshold": 60},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": scheme}, "periodSeconds": 10},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http", "scheme": scheme}, "periodSeconds": 5},
            "lifecycle": PRE_STOP,
            "volumeMounts": mounts,
            "securityContext": CONTAINER_SECURITY,
        }
        k8s.apps.v1.Deployment(
            name,
            metadata=meta(NAME, annotations=owned_count(autoscaled)),
            spec={
                "replicas": spec.min_replicas,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": account.metadata.name,
                        # The router drains for the slowest request's queue wait and scoring (router_image/__main__.py).
                        "terminationGracePeriodSeconds": PRE_STOP_S + math.ceil(config.drain_seconds) + STOP_MARGIN_S,
                        "containers": [container],
                        "volumes": volumes,
                        "securityContext": POD_SECURITY,
                        **spread(selector),
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["spec.replicas"] if autoscaled else None),
        )
        disruption_budget(name, meta(NAME), selector, self)
        self.register_outputs({"namespace": self.namespace, "host": self.host, "base_url": self.base_url,
                               "token_signing_key": self.token_signing_key})

    def _key(self, name: str, key_id: str, which: str, settings: AuthSettings) -> pulumi.Output[str]:
        given = settings.primary_key if which == "primary" else settings.secondary_key
        if given is not None:
            return pulumi.Output.secret(given.get_secret_value())
        password = random.RandomPassword(
            f"{name}-{key_id}-{which}", length=KEY_LENGTH, special=False,
            keepers={"rotation": str(settings.primary_key_rotation if which == "primary" else settings.secondary_key_rotation)},
            opts=pulumi.ResourceOptions(parent=self))
        return pulumi.Output.secret(password.result)

    def _signing_key(self, name: str, generation: int, algorithm: str) -> tls.PrivateKey:
        """A generation's own resource: a rotation adds one and drops the oldest, leaving the others be.
        Generation 0 keeps the name of the single key there was before rotation, so that upgrading replaces it not."""
        resource = f"{name}-token" if generation == 0 else f"{name}-token-{generation}"
        child = pulumi.ResourceOptions(parent=self)
        if algorithm == "ES256":
            return tls.PrivateKey(resource, algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        return tls.PrivateKey(resource, algorithm="RSA", rsa_bits=2048, opts=child)

    def _tls(self, name: str, ssl: SslSpec, certificate: tuple[pulumi.Input[str], pulumi.Input[str]] | None,
             host: str | None, address: pulumi.Output[str], meta) -> pulumi.Input[str]:
        """The Secret (kubernetes.io/tls) the router serves: from the stack, self-signed, or cert-manager's."""
        secret_name = f"{NAME}-tls"
        child = pulumi.ResourceOptions(parent=self)
        if ssl.cert_manager_issuer:
            names = {"dnsNames": [host]} if host else {"ipAddresses": [address]}
            k8s.apiextensions.CustomResource(
                f"{name}-tls", api_version="cert-manager.io/v1", kind="Certificate", metadata=meta(secret_name),
                # A new key at each renewal, as cert-manager 1.18 does by default: before it, the first key stayed for good.
                spec={"secretName": secret_name, "issuerRef": {"name": ssl.cert_manager_issuer, "kind": "ClusterIssuer"},
                      **names, "privateKey": {"rotationPolicy": "Always"}},
                opts=child)
            return secret_name
        if ssl.cname:
            given = certificate or (ssl.certificate.get_secret_value(), ssl.key.get_secret_value())  # type: ignore[union-attr]
            cert, key = pulumi.Output.secret(given[0]), pulumi.Output.secret(given[1])
        else:
            # self_signed, and leaf_domain_label: Azure ML's Microsoft-issued certificate has no
            # counterpart outside Azure ML, so the leaf domain gets a self-signed one too.
            if ssl.leaf_domain_label:
                pulumi.log.warn(f"ssl.leaf_domain_label: {host} gets a self-signed certificate; clients must trust it, "
                                "or give certificate + key or cert_manager_issuer", self)
            private = tls.PrivateKey(f"{name}-tls", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            names = {"dns_names": [host]} if host else {"ip_addresses": [address]}
            cert = tls.SelfSignedCert(
                f"{name}-tls", private_key_pem=private.private_key_pem, validity_period_hours=24 * 365,
                early_renewal_hours=24 * 30, subject=tls.SelfSignedCertSubjectArgs(common_name=host or NAME),
                allowed_uses=["digital_signature", "key_encipherment", "server_auth"], opts=child, **names).cert_pem
            key = pulumi.Output.secret(private.private_key_pem)
        secret = k8s.core.v1.Secret(f"{name}-tls", metadata=meta(secret_name), type="kubernetes.io/tls",
                                    string_data={"tls.crt": cert, "tls.key": key}, opts=child)
        return secret.metadata.name

    def access(self, route: RouteConfig) -> RouteAccess:
        """Where a route is called (`<base>/api/v1/<kind>/<name>/score`) and its keys, if key auth.

        Only a route of this router's: another's would be a URI it answers 404 and, for key auth, no keys."""
        if route.key_id not in self._served:
            raise ValueError(f"ModelRouter.access: {route.kind} {route.name} is not a route of router "
                             f"{self.pulumi_resource_name} (ModelRouterArgs.routes)")
        base = self.base_url.apply(lambda b: f"{b}/api/v1/{route.kind}/{route.name}")
        primary, secondary = self._keys.get(route.key_id, (None, None))
        return RouteAccess(scoring_uri=base.apply(lambda b: f"{b}/score"),
                           swagger_uri=base.apply(lambda b: f"{b}/swagger.json"),
                           primary_key=primary, secondary_key=secondary)


def signing_generations(rotation: int) -> list[int]:
    """The token keys published at `rotation`, the signing one first (the router tries them in this order).

    The previous key stays for the tokens it signed; the next is published ahead, as the pods see a changed
    ConfigMap only minutes after the `up` (the kubelet's refresh): signing at once with a key made in that
    `up` had some pods refuse its tokens meanwhile.
    """
    return [rotation, *([rotation - 1] if rotation else []), rotation + 1]


def _ingress_address(status) -> str:
    """The load balancer's address, once the cloud gave it one (pulumi-kubernetes waits for it)."""
    ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
    return (ingress[0].ip or ingress[0].hostname) if ingress else ""
