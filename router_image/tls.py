"""The router's serving certificate, loaded again when its mounted Secret changes.

cert-manager renews a certificate in place and Pulumi replaces a self-signed one before it
expires; the kubelet then swaps the Secret's files. Loaded once, the router would serve the old
pair until it expired. Loaded again into the same context, new handshakes get the new pair
while open connections keep theirs; a pair that does not load leaves the previous one serving.
"""

from __future__ import annotations

import logging
import ssl

from router_image.auth import Mounted, files_stamp
from router_image.config import TlsConfig

log = logging.getLogger("router.tls")


class ServingCertificate(Mounted):
    def __init__(self, config: TlsConfig):
        self._config = config
        super().__init__()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(config.cert_file, config.key_file)

    def _stamp_now(self) -> tuple[int, ...]:
        return files_stamp(self._config.cert_file, self._config.key_file)

    def _read(self) -> None:
        try:
            self.context.load_cert_chain(self._config.cert_file, self._config.key_file)
        except (OSError, ssl.SSLError) as exc:  # a half-written pair, a key that does not match
            log.warning("TLS certificate not reloaded, the previous one stays: %s", exc)
        else:
            log.info("TLS certificate reloaded from %s", self._config.cert_file)

    def refresh(self) -> None:
        self._refresh()

    def use(self, config: TlsConfig) -> None:
        """A reload's files (already loaded once to check them): served from the next handshake on."""
        if config != self._config:
            self._config = config
            self._stamp = self._stamp_now()
            self._read()
