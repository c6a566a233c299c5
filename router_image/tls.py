"""The router's serving certificate, loaded again when its mounted Secret changes, and pinned by its peers.

cert-manager renews a certificate in place and Pulumi replaces a self-signed one before it
expires; the kubelet then swaps the Secret's files. Loaded once, the router would serve the old
pair until it expired. Each load makes a context of its own, and the listener's context hands
every new handshake to the latest one that loaded (its SNI callback runs for every ClientHello,
with or without a name): open connections keep theirs, and a pair that does not load leaves the
previous one serving. Loaded into the listener's context itself, a certificate whose key did not
match replaced the certificate and left no key, and every handshake failed.

The scaling leader reads its peers' load over the same port, at their pod IPs (PeerTrust).
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from pathlib import Path

from router_image.auth import Mounted, files_stamp
from router_image.config import TlsConfig

log = logging.getLogger("router.tls")
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
# How long the leaf a renewal replaced stays pinned: the kubelet brings a Secret's change to the pods within a
# minute or two of each other (its sync period and cache), so ten minutes leaves room for a slow node.
PEER_PIN_OVERLAP_S = 600.0


def _load(config: TlsConfig) -> ssl.SSLContext:
    """The pair's own context; an OSError naming its files when it does not load (ssl's names neither: a key
    not mounted yet is "[Errno 2] No such file or directory")."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except OSError as exc:  # ssl.SSLError too: a key that does not match, a half-written file
        raise OSError(f"TLS certificate {config.cert_file} with key {config.key_file} does not load: {exc}") from None
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
        except OSError as exc:
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


class PeerTrust(Mounted):
    """Whom the leader's requests to its peers trust: the router's own certificate, which every pod serves.

    A peer is reached at its pod IP and the certificate names the public host, so no name can be checked:
    the certificate itself is pinned (its first, the leaf; the issuers after it are not trusted, or any
    certificate they issued would pass), and only a pod holding the router's private key can present it.
    Unchecked, the peers' secret went to whoever answered at a peer's address. A renewal reaches the pods
    a minute or two apart: the leaf this pod served before stays trusted next to the new one for
    PEER_PIN_OVERLAP_S (not until the next renewal: a certificate replaced because its key leaked would
    have gone on taking the secret), and a peer that already serves one this pod has not seen is refused
    until its files change too.
    """

    def __init__(self, cert_file: str):
        self._cert_file = cert_file
        self._pins: list[str] = []
        self._renewed_at = time.monotonic()  # when the leaf last changed: the one before it goes PEER_PIN_OVERLAP_S on
        super().__init__()
        self.context = self._pinned()

    def _stamp_now(self) -> tuple[int, ...]:
        return files_stamp(self._cert_file)

    def _pinned(self) -> ssl.SSLContext:
        leaf = PEM_CERTIFICATE.search(Path(self._cert_file).read_text())
        if leaf is None:
            raise ValueError(f"{self._cert_file} holds no PEM certificate")
        pins = [pin for pin in self._pins if pin != leaf.group()][-1:] + [leaf.group()]
        context = _pinning(pins)
        if self._pins[-1:] != [leaf.group()]:
            self._renewed_at = time.monotonic()
        self._pins = pins
        return context

    def _read(self) -> None:
        try:
            self.context = self._pinned()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.warning("TLS certificate %s not re-read for the peers, the pins stay: %s", self._cert_file, exc)

    def current(self) -> ssl.SSLContext:
        self._refresh()
        if len(self._pins) > 1 and time.monotonic() - self._renewed_at > PEER_PIN_OVERLAP_S:
            self._pins = self._pins[-1:]
            self.context = _pinning(self._pins)
        return self.context


def _pinning(pins: list[str]) -> ssl.SSLContext:
    """A client context that trusts these certificates (PEM) and nothing else."""
    context = ssl.create_default_context(cadata="\n".join(pins))
    context.check_hostname = False  # the pin is the identity: see PeerTrust
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf issued by a CA is a trust anchor itself
    return context
