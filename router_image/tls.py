"""The router's serving certificate, loaded again when its mounted Secret changes.

cert-manager renews a certificate in place and Pulumi replaces a self-signed one before it
expires; the kubelet then swaps the Secret's files. Loaded once, the router would serve the old
pair until it expired. Each load makes a context of its own, and the listener's context hands
every new handshake to the latest one that loaded (its SNI callback runs for every ClientHello,
with or without a name): open connections keep theirs, and a pair that does not load leaves the
previous one serving. Loaded into the listener's context itself, a certificate whose key did not
match replaced the certificate and left no key, and every handshake failed.
"""

from __future__ import annotations

import logging
import ssl

from router_image.auth import Mounted, files_stamp
from router_image.config import TlsConfig

log = logging.getLogger("router.tls")


def _load(config: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.cert_file, config.key_file)
    return context


class ServingCertificate(Mounted):
    def __init__(self, config: TlsConfig):
        self._config = config
        super().__init__()
        self._latest = _load(config)
        self.context = self._latest  # the listener's, for good
        self.context.sni_callback = self._hand_over

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                   context: ssl.SSLContext) -> None:
        if context is not self._latest:
            connection.context = self._latest

    def _stamp_now(self) -> tuple[int, ...]:
        return files_stamp(self._config.cert_file, self._config.key_file)

    def _read(self) -> None:
        try:
            self._latest = _load(self._config)
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
