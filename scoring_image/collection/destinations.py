"""Where shipped batches land: an Azure Blob container, or a local folder with the same layout.

Writes overwrite: the shipper names each batch after its spool segment, so sending a
segment twice (after a crash between upload and delete) rewrites the same blob and each
record lands once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from scoring_image.config import ScorerSettings


class Destination(Protocol):
    def put(self, name: str, data: bytes) -> None: ...


class LocalFolder:
    """`<folder>/<container>/<name>`: what the local stack uses instead of blob storage."""

    def __init__(self, folder: Path, container: str) -> None:
        self._root = folder / container

    def put(self, name: str, data: bytes) -> None:
        target = self._root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)


class BlobContainer:
    def __init__(self, settings: ScorerSettings) -> None:
        from azure.storage.blob import ContainerClient

        if settings.data_collection_container_url is not None:
            self._client = ContainerClient.from_container_url(
                settings.data_collection_container_url.get_secret_value()
            )
        else:
            assert settings.data_collection_connection_string is not None
            self._client = ContainerClient.from_connection_string(
                settings.data_collection_connection_string.get_secret_value(),
                settings.data_collection_container,
            )

    def put(self, name: str, data: bytes) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        try:
            self._client.upload_blob(name, data, overwrite=True)
        except ResourceNotFoundError:  # first batch into a new storage account
            try:
                self._client.create_container()
            except ResourceExistsError:
                pass
            self._client.upload_blob(name, data, overwrite=True)


def open_destination(settings: ScorerSettings) -> Destination:
    if settings.data_collection_local_dir is not None:
        return LocalFolder(Path(settings.data_collection_local_dir), settings.data_collection_container)
    return BlobContainer(settings)
