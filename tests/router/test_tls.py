"""The serving certificate behind a real TLS listener on 127.0.0.1: what a change of its files does to new handshakes."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Fixed  # noqa: E402
from keys import certificate, self_signed, served_name, write_pair  # noqa: E402

from router_image import auth  # noqa: E402
from router_image.app import Router  # noqa: E402
from router_image.config import RouterConfig, TlsConfig  # noqa: E402
from router_image.tls import PeerTrust, ServingCertificate  # noqa: E402

pytestmark = pytest.mark.anyio


def _install(live: Path, cert_from: Path, key_from: Path) -> None:
    """The pair's files replaced (new inodes, as a Secret's swap gives)."""
    for name, source in (("tls.crt", cert_from), ("tls.key", key_from)):
        (live / f"{name}.tmp").write_bytes((source / name).read_bytes())
        os.replace(live / f"{name}.tmp", live / name)


async def test_a_pair_that_does_not_match_leaves_the_previous_one_serving(tmp_path, monkeypatch, caplog) -> None:
    """A renewed certificate next to the old key (a hand-made Secret, a half-done rotation) does not load. Loaded
    into the listener's own context it left that context with the new certificate and no key: every handshake
    failed until the files were fixed, while the log said the previous pair stayed."""
    monkeypatch.setattr(auth, "KEY_RELOAD_S", 0.0)
    caplog.set_level(logging.INFO, logger="router.tls")
    first, second, live = tmp_path / "first", tmp_path / "second", tmp_path / "live"
    self_signed(first, "first")
    self_signed(second, "second")
    live.mkdir()
    _install(live, first, first)
    certificate = ServingCertificate(TlsConfig(cert_file=str(live / "tls.crt"), key_file=str(live / "tls.key")))
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0, ssl=certificate.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await asyncio.to_thread(served_name, port) == "CN=first"
        _install(live, second, first)
        certificate.refresh()
        assert "TLS certificate not reloaded, the previous one stays" in caplog.text
        assert await asyncio.to_thread(served_name, port) == "CN=first"
        _install(live, second, second)  # the rotation completed
        certificate.refresh()
        assert await asyncio.to_thread(served_name, port) == "CN=second"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("case", ["key missing", "key of another pair"])
async def test_a_reload_naming_a_pair_that_does_not_load_says_which(tmp_path, case) -> None:
    """ssl names no file: a reload naming a key not mounted yet was refused with "[Errno 2] No such file or
    directory" in the log and /readyz, which says neither what nor where."""
    first, second = tmp_path / "first", tmp_path / "second"
    self_signed(first, "first")
    self_signed(second, "second")
    key = tmp_path / "absent.key" if case == "key missing" else first / "tls.key"
    path = tmp_path / "router.json"
    running = RouterConfig(tls=TlsConfig(cert_file=str(first / "tls.crt"), key_file=str(first / "tls.key")))
    path.write_text(running.dump())
    router = Router(RouterConfig.load(path), str(path), backend=Fixed({}))
    path.write_text(running.model_copy(update={"tls": TlsConfig(cert_file=str(second / "tls.crt"),
                                                                key_file=str(key))}).dump())
    assert not await router.reload()
    assert router.config == running
    error = router.status()["config_error"]
    assert str(second / "tls.crt") in error and str(key) in error, error



def _handshake(client_context: ssl.SSLContext, server_context: ssl.SSLContext) -> ssl.SSLObject:
    """The client's end of a handshake done in memory; ssl.SSLError when either end refused it."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(4):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
    return client


def _trusts(context: ssl.SSLContext, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, folder: Path) -> bool:
    """Whether a client with `context` completes a handshake with a server presenting this pair."""
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(*write_pair(folder, [cert], key))
    try:
        _handshake(context, served)
    except ssl.SSLCertVerificationError:
        return False
    return True


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the old versions are offered on purpose
def test_the_serving_certificate_takes_tls_1_2_and_1_3_only(tmp_path) -> None:
    """TLS 1.0 and 1.1 (deprecated by RFC 8996) are refused whatever a client offers: a guard on Python's and
    OpenSSL's defaults, which the router relies on. The listener's context decides the version (a reloaded pair's
    context, handed over by the SNI callback, brings its certificate, not its protocol settings)."""
    self_signed(tmp_path, "first")
    served = ServingCertificate(TlsConfig(cert_file=str(tmp_path / "tls.crt"), key_file=str(tmp_path / "tls.key"))).context
    for version, name in [(ssl.TLSVersion.TLSv1, None), (ssl.TLSVersion.TLSv1_1, None),
                          (ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]:
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        client.set_ciphers("ALL:@SECLEVEL=0")  # an old client's offer, as far as this OpenSSL still makes one
        client.minimum_version = client.maximum_version = version
        if name:
            assert _handshake(client, served).version() == name
        else:
            with pytest.raises(ssl.SSLError):
                _handshake(client, served)


def test_the_certificate_a_renewal_replaced_is_trusted_by_the_peers_for_minutes_not_until_the_next_renewal(
        tmp_path, monkeypatch) -> None:
    """The leaf a pod served before stays pinned while the kubelet brings the renewal to its peers (a minute or two
    apart). It stayed until the next renewal, months later, or its expiry: a certificate replaced because its key
    leaked still took the peers' secret from whoever held that key at a peer's address. Literal times: ten minutes."""
    monkeypatch.setattr(auth, "KEY_RELOAD_S", 0.0)
    first, second = certificate("router.example.com"), certificate("router.example.com")
    trust = PeerTrust(str(write_pair(tmp_path / "own", [first[0]], first[1])[0]))
    write_pair(tmp_path / "own", [second[0]], second[1])
    renewed = time.monotonic()
    assert _trusts(trust.current(), *first, tmp_path / "peer") and _trusts(trust.current(), *second, tmp_path / "peer")
    monkeypatch.setattr(time, "monotonic", lambda: renewed + 9 * 60)
    assert _trusts(trust.current(), *first, tmp_path / "peer")
    monkeypatch.setattr(time, "monotonic", lambda: renewed + 11 * 60)
    assert not _trusts(trust.current(), *first, tmp_path / "peer")
    assert _trusts(trust.current(), *second, tmp_path / "peer")
