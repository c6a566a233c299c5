"""Where shipped batches land: an Azure Blob container, or a local folder with the same layout.

A batch is written whole or not at all: one write when it fits in a part, else parts staged in
order (`stage`, index 0, 1, ...) and made visible together (`commit`), so the shipper holds a part,
never the batch.  Writes overwrite: the shipper names each batch after its spool segment, so
sending a segment twice (after a crash between upload and delete) rewrites the same blob and each
record lands once; a resend stages its parts anew, over any an interrupted send left.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from scoring_image.config import ScorerSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_T = TypeVar("_T")


class Destination(Protocol):
    def put(self, name: str, data: bytes) -> None: ...

    def stage(self, name: str, index: int, part: bytes) -> None: ...

    def commit(self, name: str, parts: int) -> None: ...


class LocalFolder:
    """`<folder>/<container>/<name>`: what the local stack uses instead of blob storage.  Parts go to a
    hidden file beside it, renamed into place on commit (one segment is shipped by one shipper at a time,
    so the name is its alone)."""

    def __init__(self, folder: Path, container: str) -> None:
        self._root = folder / container

    def put(self, name: str, data: bytes) -> None:
        self.stage(name, 0, data)
        self.commit(name, 1)

    def stage(self, name: str, index: int, part: bytes) -> None:
        staged = self._staged(name)
        staged.parent.mkdir(parents=True, exist_ok=True)
        with staged.open("wb" if index == 0 else "ab") as file:
            file.write(part)

    def commit(self, name: str, parts: int) -> None:
        self._staged(name).replace(self._root / name)

    def _staged(self, name: str) -> Path:
        target = self._root / name
        return target.with_name(f".{target.name}.part")


# The shipper retries a failed segment on its next pass, so the SDK's own retrying (tries 15-24 s apart, 20 s
# to connect and 60 s to wait for an answer: 87 s to fail on a closed port, over 150 s on a store that never
# answers) only held a pass, the spool filling behind it and the final upload at shutdown spent waiting.
# One quick retry is kept for a request that got no answer (a keep-alive connection the store closed, a
# connection refused), after 0-2 s (the SDK sleeps initial_backoff + increment_base ** n, give or take
# random_jitter_range).  An answer (503 Server Busy, 429, a 500) is never retried by the SDK (`retry_status`
# 0): its retry ignores Retry-After, so a throttling store was asked again within 2 s; the shipper's next pass
# waits what it asks (shipper.RETRY_AFTER_MAX_S).
# `connection_timeout` bounds the connect *and* the sending of a request's body (urllib3 2 sends it under
# the connect timeout, and a socket's send timeout counts the whole send): 20 s lets one part (PART_BYTES,
# 4 MiB) through at ~1.7 Mbit/s per upload, so the 8 at once of a large segment at ~14 Mbit/s together (a
# slower link fails every pass of a large segment: kept in the spool, never shipped).  `read_timeout` bounds
# the wait for the answer once the body is sent, which the service gives in well under a second.  A failing
# call, so a pass, ends within 2 x (20 s + 4 s) + 2 s.
_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 1, "retry_status": 0, "initial_backoff": 1, "increment_base": 0, "random_jitter_range": 1,
    "connection_timeout": 20, "read_timeout": 4,
}


# What Azure AD workload identity's webhook sets in a pod labelled azure.workload.identity/use=true (with
# AZURE_AUTHORITY_HOST), from its ServiceAccount's azure.workload.identity/client-id annotation.
WORKLOAD_IDENTITY_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")


def workload_identity(setting: str) -> TokenCredential:
    """The pod's workload identity, checked at start (`setting` names what asked for it: the scorer's account url, or
    the model fetch's): without the webhook's variables the first upload would fail (every pass, the spool filling)
    with what the SDK says of its arguments, not of the pod. Not DefaultAzureCredential: where the webhook did not
    run, its chain would fall through to the node's managed identity (IMDS), the kubelet's, and write as that."""
    from azure.identity import WorkloadIdentityCredential

    missing = [name for name in WORKLOAD_IDENTITY_ENV if not os.environ.get(name)]
    if missing:
        raise ValueError(f"{setting} signs in "
                         f"as the pod's Azure AD workload identity, but {', '.join(missing)} unset: the pod needs the "
                         "label azure.workload.identity/use=true and a ServiceAccount annotated "
                         "azure.workload.identity/client-id, on a cluster with workload identity enabled")
    return WorkloadIdentityCredential()


def _block_id(index: int) -> str:
    return f"{index:08d}"  # every id of a blob the same length, as the service requires


class BlobContainer:
    def __init__(self, settings: ScorerSettings) -> None:
        from azure.storage.blob import ContainerClient

        if settings.data_collection_account_url is not None:
            self._client = ContainerClient(
                settings.data_collection_account_url.get_secret_value(),
                settings.data_collection_container,
                credential=workload_identity("data_collection_account_url "
                                             f"[{ScorerSettings.env_name('data_collection_account_url')}]"),
                **_CLIENT_OPTIONS,
            )
        elif settings.data_collection_container_url is not None:
            self._client = ContainerClient.from_container_url(
                settings.data_collection_container_url.get_secret_value(), **_CLIENT_OPTIONS
            )
        else:
            assert settings.data_collection_connection_string is not None
            self._client = ContainerClient.from_connection_string(
                settings.data_collection_connection_string.get_secret_value(),
                settings.data_collection_container,
                **_CLIENT_OPTIONS,
            )

    def put(self, name: str, data: bytes) -> None:
        self._creating_container(lambda: self._client.upload_blob(name, data, overwrite=True))

    def stage(self, name: str, index: int, part: bytes) -> None:
        blob = self._client.get_blob_client(name)
        self._creating_container(lambda: blob.stage_block(_block_id(index), part, length=len(part)))

    def commit(self, name: str, parts: int) -> None:
        from azure.storage.blob import BlobBlock

        self._client.get_blob_client(name).commit_block_list([BlobBlock(_block_id(i)) for i in range(parts)])

    def _creating_container(self, write: Callable[[], _T]) -> _T:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            return write()
        except ResourceNotFoundError:  # first batch into a new storage account
            try:
                self._client.create_container()
            except ResourceExistsError:
                pass
            return write()


def open_destination(settings: ScorerSettings) -> Destination:
    if settings.data_collection_local_dir is not None:
        return LocalFolder(Path(settings.data_collection_local_dir), settings.data_collection_container)
    return BlobContainer(settings)
