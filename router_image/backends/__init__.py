"""Where replicas come from: a small interface with a `local` and a `kubernetes` implementation.

A backend keeps each version's replicas at the count the autoscaler asks for and tells the
router which addresses are ready to take requests (`on_ready(deployment, addresses)`).
"""

from __future__ import annotations

from typing import Callable, Protocol

from router_image.autoscale import PodLoad
from router_image.config import RouterConfig, VersionConfig

ReadyCallback = Callable[[str, list[str]], None]


class Backend(Protocol):
    # Only the leader scales: always the lone local router; the Lease holder among router pods.
    is_leader: bool

    async def start(self, on_ready: ReadyCallback) -> None: ...

    async def apply(self, versions: list[VersionConfig]) -> None:
        """The versions the config now declares: start new ones, stop removed ones."""

    async def scale(self, deployment: str, replicas: int) -> None: ...

    def replicas(self, deployment: str) -> int:
        """The count it is working towards (ready or not)."""

    def synced(self) -> bool:
        """Whether every version's replicas have been reported at least once: until then a router pod
        takes no traffic, as every request would be a 503 while its replicas are there."""

    def problem(self, deployment: str) -> str | None:
        """Why the version has no ready replica, where the backend sees it (None: nothing wrong, or
        only the cluster knows: its pods' events)."""

    def rolling(self, deployment: str) -> bool:
        """Whether replicas of an earlier config still serve while the new ones start, so that what wrote
        the config judges its edit on the new ones (False where a Deployment rolls out on its own)."""

    def remote_demand(self, deployment: str) -> float:
        """In-flight + queued requests for this deployment at the other router pods (0 when alone)."""

    def router_pods(self) -> list[PodLoad]:
        """The other router pods' own load, as the leader last polled it ([] when alone)."""

    async def probe(self, address: str) -> bool:
        """Is an ejected replica healthy again?"""

    async def stop(self) -> None: ...


def backend_for(config: RouterConfig) -> Backend:
    if config.backend == "local":
        from router_image.backends.local import LocalBackend

        return LocalBackend()
    from router_image.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(config)
