"""Authenticator and mint_token: every key and token case, without a server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

sys.path.insert(0, str(Path(__file__).parent))
from keys import signing_key, write_keys  # noqa: E402

from router_image import auth  # noqa: E402
from router_image.auth import CLOCK_SKEW_S, AuthError, Authenticator  # noqa: E402
from router_image.config import AuthConfig, ConfigError, RouteConfig, TokenConfig, VersionConfig  # noqa: E402
from router_image.tokens import mint_token  # noqa: E402

V = [VersionConfig(name="v1", deployment="d")]
KEYED = RouteConfig(kind="service", name="iris", versions=V)
TOKENED = RouteConfig(kind="endpoint", name="ep", auth=AuthConfig(key_enabled=False, token_enabled=True), versions=V)
OPEN = RouteConfig(kind="service", name="open", auth=AuthConfig(key_enabled=False), versions=V)


@pytest.fixture
def decoded(monkeypatch) -> list[bytes]:
    """Every token PyJWT is asked to decode (its signature checked), in order."""
    tokens: list[bytes] = []
    real = jwt.decode

    def spy(token: bytes, *args, **kwargs):
        tokens.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return tokens


@pytest.fixture
def keys(tmp_path) -> Path:
    write_keys(tmp_path / "keys", "service.iris", "primary-key-1", "secondary-key-1")
    return tmp_path / "keys"


def test_primary_and_secondary_keys_admit_others_do_not(keys) -> None:
    a = Authenticator(str(keys), None)
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")
    a.check(KEYED, KEYED.key_id, b"bearer secondary-key-1")
    for header in (None, b"", b"Bearer", b"Bearer wrong", b"Basic primary-key-1", b"primary-key-1",
                   b"Bearer primary-key-", b"Bearer primary-key-12"):
        with pytest.raises(AuthError) as caught:
            a.check(KEYED, KEYED.key_id, header)
        assert caught.value.challenge.startswith("Bearer")
        assert "primary-key-1" not in str(caught.value)


def test_keys_are_compared_in_constant_time(keys, monkeypatch) -> None:
    """`==` on bytes stops at the first differing byte: timing it tells a caller how much of a key is right."""
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    a = Authenticator(str(keys), None)
    a.check(KEYED, KEYED.key_id, b"Bearer secondary-key-1")
    with pytest.raises(AuthError):
        a.check(KEYED, KEYED.key_id, b"Bearer wrong")
    assert {key for sent, key in compared if sent == b"wrong"} == {b"primary-key-1", b"secondary-key-1"}
    assert (b"secondary-key-1", b"secondary-key-1") in compared


def test_a_rotated_key_applies_without_a_restart(keys) -> None:
    a = Authenticator(str(keys), None)
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")
    time.sleep(0.01)
    write_keys(keys, "service.iris", "primary-key-2", "secondary-key-1")
    a.refresh()
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-2")
    with pytest.raises(AuthError):
        a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")


def test_a_key_file_replaced_within_one_tick_of_the_file_clock_is_seen(keys) -> None:
    """On a file system with a coarse clock a rotation can keep the time it replaced: the inode tells."""
    a = Authenticator(str(keys), None)
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")
    times = {p: p.stat().st_mtime_ns for p in [keys, *keys.iterdir()]}
    fresh = keys / "new.primary"
    fresh.write_text("primary-key-2")
    fresh.replace(keys / "service.iris.primary")  # a new inode, as a rename gives
    for path, ns in times.items():
        if path.exists():
            os.utime(path, ns=(ns, ns))
    a.refresh()
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-2")


def test_auth_off_admits_anyone(keys) -> None:
    Authenticator(str(keys), None).check(OPEN, OPEN.key_id, None)


def _hs256(claims: dict, secret: bytes) -> str:
    """A token MACed with `secret` (PyJWT refuses a PEM key as an HMAC secret, so by hand): the algorithm confusion
    attack, where a verifier that trusts the header's alg checks the MAC with the public key it holds."""
    head = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}') + b"." + jwt.utils.base64url_encode(
        json.dumps(claims).encode())
    return (head + b"." + jwt.utils.base64url_encode(hmac.new(secret, head, hashlib.sha256).digest())).decode()


def _public_of(private: bytes):
    return serialization.load_pem_private_key(private, password=None).public_key()


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_tokens(tmp_path, algorithm) -> None:
    private, public = signing_key(algorithm)
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem"), algorithm=algorithm))
    token, refresh_by = mint_token(private, "ep")
    assert time.time() + 1700 < refresh_by < time.time() + 1900  # half the hour
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())

    other_private, _ = signing_key(algorithm)
    now = int(time.time())
    claims = {"aud": "ep", "iss": "aks-model-serving", "exp": now + 60}
    bad = {
        "wrong audience": mint_token(private, "iris")[0],
        "expired": mint_token(private, "ep", lifetime_s=-CLOCK_SKEW_S - 30)[0],
        "wrong key": mint_token(other_private, "ep")[0],
        "wrong issuer": mint_token(private, "ep", issuer="someone-else")[0],
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "alg swap (HS256 keyed with the public key)": _hs256({**claims, "iat": now}, public),
        "not before, beyond the skew": jwt.encode({**claims, "iat": now, "nbf": now + 600}, private, algorithm=algorithm),
        "kid naming a key elsewhere": jwt.encode({**claims, "iat": now}, other_private, algorithm=algorithm,
                                                 headers={"kid": "../../../../dev/null", "jku": "https://evil.example/jwks"}),
        "its own key in its header": jwt.encode({**claims, "iat": now}, other_private, algorithm=algorithm,
                                                headers={"jwk": json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(
                                                    _public_of(other_private)))}),
        "no exp": jwt.encode({"aud": "ep", "iss": "aks-model-serving"}, private, algorithm=algorithm),
        "no iat": jwt.encode(claims, private, algorithm=algorithm),
        "living past lifetime_seconds": mint_token(private, "ep", lifetime_s=3601)[0],
        "living for years": mint_token(private, "ep", lifetime_s=30 * 365 * 86400)[0],
        "garbage": "abc.def.ghi",
    }
    for case, bad_token in bad.items():
        with pytest.raises(AuthError) as caught:
            a.check(TOKENED, TOKENED.key_id, b"Bearer " + bad_token.encode())
        assert "invalid_token" in caught.value.challenge, case
    with pytest.raises(AuthError):
        a.check(TOKENED, TOKENED.key_id, None)


@pytest.mark.parametrize(("key", "kind"), [(ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
                                           (ec.generate_private_key(ec.SECP384R1()), "EC secp384r1")],
                         ids=["Ed25519", "EC P-384"])
def test_a_token_is_minted_only_with_a_key_the_router_can_verify_with(key, kind) -> None:
    """The router verifies ES256 (EC P-256) or RS256: any other key got ES256 picked for it and a message from deep in
    PyJWT ("Expecting a PEM-formatted key." for an Ed25519 key that was one)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError) as caught:
        mint_token(pem, "ep")
    assert str(caught.value) == (f"mint_token: the key is {kind}; the router verifies tokens signed with an EC P-256 "
                                 "(ES256) or RSA (RS256) private key")


def test_lifetime_seconds_is_the_longest_a_token_may_live(tmp_path) -> None:
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem"), lifetime_seconds=86400))
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(private, "ep", lifetime_s=86400)[0].encode())
    with pytest.raises(AuthError, match="it lives over 86400 s"):
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(private, "ep", lifetime_s=86401)[0].encode())


def test_a_key_is_no_token_and_a_token_no_key(keys, tmp_path) -> None:
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(str(keys), TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    with pytest.raises(AuthError):
        a.check(TOKENED, TOKENED.key_id, b"Bearer primary-key-1")
    with pytest.raises(AuthError):
        a.check(KEYED, KEYED.key_id, b"Bearer " + mint_token(private, "iris")[0].encode())


def _secret_volume(folder: Path, stamp: str, keys: dict[str, str]) -> None:
    """What the kubelet does to a mounted Secret: a new timestamped folder, `..data` swapped to it
    in one rename, the old folder removed; the key files are links through `..data`."""
    import os
    import shutil

    folder.mkdir(exist_ok=True)
    data = folder / f"..{stamp}"
    data.mkdir()
    for name, value in keys.items():
        (data / name).write_text(value)
    old = os.readlink(folder / "..data") if (folder / "..data").is_symlink() else None
    os.symlink(data.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    for name in keys:
        if not (folder / name).is_symlink():
            os.symlink(f"..data/{name}", folder / name)
    if old:
        shutil.rmtree(folder / old)


def test_a_rotated_kubernetes_secret_volume_applies(tmp_path) -> None:
    folder = tmp_path / "secret"
    _secret_volume(folder, "2026_11_27_01", {"service.iris.primary": "p1", "service.iris.secondary": "s1"})
    a = Authenticator(str(folder), None)
    a.check(KEYED, KEYED.key_id, b"Bearer p1")
    _secret_volume(folder, "2026_11_27_02", {"service.iris.primary": "p2", "service.iris.secondary": "s1"})
    a.refresh()
    a.check(KEYED, KEYED.key_id, b"Bearer p2")
    a.check(KEYED, KEYED.key_id, b"Bearer s1")
    with pytest.raises(AuthError):
        a.check(KEYED, KEYED.key_id, b"Bearer p1")


def test_an_entry_vanishing_mid_swap_is_no_error(tmp_path) -> None:
    """The kubelet removes the old timestamped folder while the router lists the volume: an entry
    listed, then gone (here: a dangling link) must not turn into an error."""
    import os

    folder = tmp_path / "secret"
    _secret_volume(folder, "2026_11_27_01", {"service.iris.primary": "p1", "service.iris.secondary": "s1"})
    a = Authenticator(str(folder), None)
    os.symlink("..2026_11_27_00", folder / "..2026_11_27_00_gone")
    os.symlink("..data/service.iris.tertiary", folder / "service.iris.primary.old")
    os.symlink("nowhere", folder / "service.other.primary")
    a.refresh()  # the folder changed: re-read, the vanished entries skipped
    a.check(KEYED, KEYED.key_id, b"Bearer p1")
    assert sorted(Authenticator(str(folder), None).keys.keys("service.iris")) == [b"p1", b"s1"]


def test_a_key_rotated_while_the_folder_is_read_is_seen_at_the_next_check(keys, monkeypatch) -> None:
    """The folder's times are taken before its files are read: a file replaced during a read is read again."""
    a = Authenticator(str(keys), None)
    time.sleep(0.01)
    (keys / "service.iris.primary").write_text("primary-key-2")  # rotation, step 1
    read = Path.read_bytes

    def read_then_rotate(path: Path) -> bytes:
        data = read(path)
        if path.name == "service.iris.secondary" and data == b"secondary-key-1":
            time.sleep(0.01)
            (keys / "service.iris.secondary").write_text("secondary-key-2")  # step 2 lands mid-read
        return data

    monkeypatch.setattr(Path, "read_bytes", read_then_rotate)
    a.refresh()  # the re-read that step 2 lands in
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-2")
    monkeypatch.setattr(Path, "read_bytes", read)
    a.refresh()
    a.check(KEYED, KEYED.key_id, b"Bearer secondary-key-2")
    with pytest.raises(AuthError):
        a.check(KEYED, KEYED.key_id, b"Bearer secondary-key-1")


def test_a_rotated_token_signing_key_applies_without_a_restart(tmp_path, caplog) -> None:
    (old_private, old_public), (new_private, new_public) = signing_key(), signing_key()
    folder = tmp_path / "token"
    _secret_volume(folder, "2026_11_27_01", {"jwt.pub": old_public.decode()})
    a = Authenticator(None, TokenConfig(public_key_file=str(folder / "jwt.pub")))
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(old_private, "ep")[0].encode())
    _secret_volume(folder, "2026_11_27_02", {"jwt.pub": new_public.decode()})
    a.refresh()
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(new_private, "ep")[0].encode())
    with pytest.raises(AuthError):  # the retired key's tokens no longer pass
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(old_private, "ep")[0].encode())
    (folder / "jwt.pub").unlink()  # unreadable for a moment: the key it had stays, said once
    for _ in range(3):
        a.refresh()
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(new_private, "ep")[0].encode())
    assert caplog.text.count("token public key not re-read") == 1


def test_an_empty_key_file_admits_no_one(keys) -> None:
    """A secondary key not yet set is an empty file: it must not turn `Bearer ` with nothing after into a key."""
    (keys / "service.iris.secondary").write_text("")
    a = Authenticator(str(keys), None)
    assert a.keys.keys("service.iris") == [b"primary-key-1"]
    for header in (b"Bearer ", b"Bearer", b"Bearer   ", b"bearer \n"):
        with pytest.raises(AuthError):
            a.check(KEYED, KEYED.key_id, header)
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")


def test_only_primary_and_secondary_files_are_keys(keys) -> None:
    """A leftover from a rotation done by hand (`.old`, `.bak`, `.primary.old`) is no key: only `.primary` and
    `.secondary` count, so a retired key stops working when it is renamed away."""
    for name, value in [("service.iris.old", "old-key"), ("service.iris.bak", "bak-key"),
                        ("service.iris.primary.old", "primary-old-key"), ("service.iris", "bare-key")]:
        (keys / name).write_text(value)
    a = Authenticator(str(keys), None)
    for value in (b"old-key", b"bak-key", b"primary-old-key", b"bare-key"):
        with pytest.raises(AuthError):
            a.check(KEYED, KEYED.key_id, b"Bearer " + value)
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")
    a.check(KEYED, KEYED.key_id, b"Bearer secondary-key-1")


def test_the_clock_skew_allowed_is_about_a_minute(tmp_path, monkeypatch) -> None:
    """Literal times, not CLOCK_SKEW_S: a skew stretched to minutes would keep an expired token good that long,
    and one cut to nothing would refuse a fresh token from a minter whose clock is a few seconds ahead."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    for expired_s, accepted in [(30, True), (90, False), (300, False)]:
        token = mint_token(private, "ep", lifetime_s=-expired_s)[0]
        if accepted:
            a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())
        else:
            with pytest.raises(AuthError, match="expired"):
                a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())
    real = time.time()
    for ahead_s, accepted in [(30, True), (90, False), (300, False)]:
        monkeypatch.setattr(time, "time", lambda: real + ahead_s)
        token = mint_token(private, "ep")[0]
        monkeypatch.undo()
        if accepted:
            a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())
        else:
            with pytest.raises(AuthError, match="ImmatureSignatureError"):
                a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())


@pytest.mark.parametrize("content", [b"garbage, not a key", b"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n",
                                     signing_key("RS256")[1], signing_key()[0]],
                         ids=["not PEM", "broken PEM", "RSA key for ES256", "private key"])
def test_a_public_key_file_that_does_not_parse_keeps_the_previous_key(tmp_path, caplog, content) -> None:
    """A half-written or wrong key file (a broken PEM block, a key of another type, a private key) must not take
    token auth down: the key it had stays, and the failure is logged, naming the file."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    time.sleep(0.01)
    (tmp_path / "pub.pem").write_bytes(content)
    a.refresh()
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(private, "ep")[0].encode())
    assert "token public key not re-read" in caplog.text and f"token public key file {tmp_path / 'pub.pem'}" in caplog.text


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_private_key_where_the_public_keys_belong_is_refused_naming_the_file_not_the_key(tmp_path, algorithm) -> None:
    """The signing key mounted in place of its public half made every router pod a minter, and PyJWT took it as a
    verification key: ES256 tokens passed, and every RS256 token ended in a 500 (a private RSA key has no verify)."""
    private, public = signing_key(algorithm)
    path = tmp_path / "pub.pem"
    path.write_bytes(public + private)
    with pytest.raises(ConfigError) as caught:
        Authenticator(None, TokenConfig(public_key_file=str(path), algorithm=algorithm))
    assert str(caught.value) == f"token public key file {path}: block 2 is a PRIVATE KEY, where only public keys belong"
    assert private.splitlines()[1].decode() not in str(caught.value)


@pytest.mark.parametrize(("content", "told"), [
    (b"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n", ": block 1 does not load as an ES256 public key"),
    (signing_key("RS256")[1], ": block 1 does not load as an ES256 public key"),
    (signing_key()[0], ": block 1 is a PRIVATE KEY, where only public keys belong"),
    (b"no PEM here", " holds no PEM key"),
], ids=["broken PEM", "RSA key for ES256", "private key", "not PEM"])
def test_a_token_key_file_that_does_not_load_stops_the_start_naming_it(tmp_path, monkeypatch, capsys, content, told) -> None:
    """At start PyJWT's and cryptography's own errors came out as a traceback naming no file ("Expected one of
    <generator object ...>, got: RSAPublicKey"), and a private key was served with."""
    from router_image import __main__ as main_module
    from router_image.config import RouterConfig

    def serve(*args, **kwargs) -> None:
        raise AssertionError("the router served with that key file")

    monkeypatch.setattr(main_module.http_server, "run", serve)
    (tmp_path / "pub.pem").write_bytes(content)
    (tmp_path / "router.json").write_text(RouterConfig(token=TokenConfig(public_key_file=str(tmp_path / "pub.pem"))).dump())
    with pytest.raises(SystemExit) as exited:
        main_module.main(["--config", str(tmp_path / "router.json")])
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"{tmp_path / 'router.json'}: token public key file {tmp_path / 'pub.pem'}{told}\n"


def test_a_token_far_longer_than_any_minted_is_refused_before_it_is_parsed(tmp_path, decoded) -> None:
    """PyJWT checks a token's characters one by one in Python before any signature: a 60 KB header of junk cost the
    router 3 ms of CPU, anyone's to send, against 0.2 ms for a real token. One over 8 KiB is not parsed."""
    private, public = signing_key("RS256")
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem"), algorithm="RS256"))
    token = mint_token(private, "ep")[0].encode()
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + token)
    junk = b"eyJhbGciOiJSUzI1NiJ9" + b"A" * 60_000 + b"." + token.split(b".", 1)[1]
    with pytest.raises(AuthError, match="over 8192 bytes") as caught:
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + junk)
    assert "invalid_token" in caught.value.challenge
    assert decoded == [token]


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_signing_key_is_rotated_with_both_public_keys_in_the_file_for_a_while(tmp_path, algorithm) -> None:
    """With one public key, a rotation refused tokens of one key or the other on every pod until they all had the
    new file and every old token had expired. The file may hold several: the new key is added next to the old,
    minted with once every pod has it, and the old one removed once its tokens expired."""
    (old_private, old_public), (new_private, new_public) = signing_key(algorithm), signing_key(algorithm)
    folder = tmp_path / "token"
    _secret_volume(folder, "2026_11_29_01", {"jwt.pub": old_public.decode()})
    a = Authenticator(None, TokenConfig(public_key_file=str(folder / "jwt.pub"), algorithm=algorithm))
    old_token = b"Bearer " + mint_token(old_private, "ep")[0].encode()
    a.check(TOKENED, TOKENED.key_id, old_token)
    _secret_volume(folder, "2026_11_29_02", {"jwt.pub": (old_public + new_public).decode()})
    a.refresh()
    a.check(TOKENED, TOKENED.key_id, old_token)
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(new_private, "ep")[0].encode())
    with pytest.raises(AuthError, match="its kid names no published key"):  # a key in neither is refused
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(signing_key(algorithm)[0], "ep")[0].encode())
    with pytest.raises(AuthError, match="InvalidAudienceError"):  # the old key still checks everything else
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(old_private, "iris")[0].encode())
    _secret_volume(folder, "2026_11_29_03", {"jwt.pub": new_public.decode()})
    a.refresh()
    with pytest.raises(AuthError):
        a.check(TOKENED, TOKENED.key_id, old_token)


def test_times_given_as_strings_are_judged_not_a_server_error(tmp_path) -> None:
    """PyJWT takes "iat": "1764400000" (int() of it passes); the lifetime check then subtracted a str from an int
    and the request ended in a 500 with a traceback instead of a verdict."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    now = int(time.time())
    for iat, exp, accepted in [(str(now), now + 600, True), (now, str(now + 600), True), (str(now), str(now + 7200), False)]:
        token = jwt.encode({"aud": "ep", "iss": "aks-model-serving", "iat": iat, "exp": exp}, private, algorithm="ES256")
        if accepted:
            a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())
        else:
            with pytest.raises(AuthError, match="it lives over 3600 s"):
                a.check(TOKENED, TOKENED.key_id, b"Bearer " + token.encode())


def test_a_token_is_verified_once_and_taken_until_it_expires(tmp_path, monkeypatch, decoded) -> None:
    """A client sends one token for half an hour or more: verifying its signature at every request cost ~110 us
    (ES256), four times the rest of a relayed request, and once more per extra key while the signing key rotates."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    token = mint_token(private, "ep")[0].encode()
    for _ in range(3):
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + token)
    assert decoded == [token]
    other = RouteConfig(kind="service", name="ep2", auth=TOKENED.auth, versions=V)
    with pytest.raises(AuthError, match="InvalidAudienceError"):  # taken for its own audience only
        a.check(other, other.key_id, b"Bearer " + token)

    now = int(time.time())  # expired 30 s ago: good within the clock skew, then no more once the skew is gone
    late = jwt.encode({"aud": "ep", "iss": "aks-model-serving", "iat": now - 600, "exp": now - 30}, private,
                      algorithm="ES256").encode()
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + late)
    monkeypatch.setattr(auth, "CLOCK_SKEW_S", 0)
    with pytest.raises(AuthError, match="expired"):
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + late)


def test_verified_tokens_kept_are_bounded_oldest_out(tmp_path, monkeypatch, decoded) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 2)
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    tokens = [b"Bearer " + mint_token(private, "ep")[0].encode() for _ in range(3)]
    for token in tokens:
        a.check(TOKENED, TOKENED.key_id, token)
    decoded.clear()
    for token in reversed(tokens):
        a.check(TOKENED, TOKENED.key_id, token)
    assert decoded == [tokens[0][7:]]


def test_a_verified_token_is_taken_a_minute_past_its_expiry_and_no_longer(tmp_path, monkeypatch) -> None:
    """The verified-token cache judges expiry itself, with PyJWT's leeway: literal times, as a cache that stretched
    the skew kept a token it had seen once good for minutes after it expired, where PyJWT would have refused it."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    now = int(time.time())
    token = b"Bearer " + jwt.encode({"aud": "ep", "iss": "aks-model-serving", "iat": now, "exp": now + 60}, private,
                                    algorithm="ES256").encode()
    a.check(TOKENED, TOKENED.key_id, token)  # verified, and kept
    monkeypatch.setattr(time, "time", lambda: now + 60 + 30)
    a.check(TOKENED, TOKENED.key_id, token)
    monkeypatch.setattr(time, "time", lambda: now + 60 + 90)
    with pytest.raises(AuthError, match="expired") as caught:
        a.check(TOKENED, TOKENED.key_id, token)
    assert caught.value.challenge == 'Bearer error="invalid_token", error_description="expired"'


def test_a_wrong_key_is_challenged_plainly_and_a_wrong_token_as_invalid(keys, tmp_path) -> None:
    """RFC 6750: `error="invalid_token"` tells a client its token is bad (renew it); a key route answers a plain
    `Bearer` challenge, a wrong key being no token at all."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(str(keys), TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    with pytest.raises(AuthError) as caught:
        a.check(KEYED, KEYED.key_id, b"Bearer wrong")
    assert caught.value.challenge == "Bearer"
    with pytest.raises(AuthError) as caught:
        a.check(TOKENED, TOKENED.key_id, b"Bearer wrong")
    assert caught.value.challenge == 'Bearer error="invalid_token"'


def test_a_minted_token_names_its_key_by_its_rfc_7638_thumbprint() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from router_image.tokens import thumbprint

    n, e = jwt.utils.base64url_decode(RFC_7638_N), jwt.utils.base64url_decode("AQAB")
    rfc_key = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    assert thumbprint(rfc_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # RFC 7638, 3.1
    for algorithm in ("ES256", "RS256"):
        private, _ = signing_key(algorithm)
        token = mint_token(private, "ep")[0]
        assert jwt.get_unverified_header(token)["kid"] == thumbprint(_public_of(private))


RFC_7638_N = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
              "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgd"
              "AZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
              "kEgU8awapJzKnqDKgw")


def _three_published(tmp_path: Path, algorithm: str) -> tuple[list[bytes], Authenticator]:
    """Three signing keys' private halves, and an authenticator given their public halves (the previous, current and
    next keys the router is given, components/router.py)."""
    pairs = [signing_key(algorithm) for _ in range(3)]
    (tmp_path / "pub.pem").write_bytes(b"".join(public for _, public in pairs))
    return [private for private, _ in pairs], Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem"),
                                                                              algorithm=algorithm))


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_token_is_checked_with_the_one_key_its_kid_names(tmp_path, algorithm, decoded) -> None:
    """A forged token was checked with every published key (three), ~290 us of ES256 per request for anyone to send."""
    from router_image.tokens import thumbprint

    privates, a = _three_published(tmp_path, algorithm)
    for private in privates:
        decoded.clear()
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(private, "ep")[0].encode())
        assert len(decoded) == 1
    now = int(time.time())
    claims = {"aud": "ep", "iss": "aks-model-serving", "iat": now, "exp": now + 600}
    attacker, _ = signing_key(algorithm)
    decoded.clear()
    forged = jwt.encode(claims, attacker, algorithm=algorithm, headers={"kid": thumbprint(_public_of(privates[2]))})
    with pytest.raises(AuthError, match="InvalidSignatureError"):
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + forged.encode())
    assert len(decoded) == 1
    decoded.clear()
    with pytest.raises(AuthError, match="its kid names no published key") as caught:
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(attacker, "ep")[0].encode())
    assert decoded == [] and caught.value.challenge == 'Bearer error="invalid_token"'


def test_tokens_without_a_kid_are_taken_within_a_budget_of_checks_a_second(tmp_path, monkeypatch, decoded) -> None:
    """Tokens minted before tokens had a kid are taken until they expire, but a forged one is checked with every
    published key: at most KIDLESS_CHECKS_PER_S checks a second go to them, the rest are refused unchecked."""
    monkeypatch.setattr(auth, "KIDLESS_CHECKS_PER_S", 4.0)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    privates, a = _three_published(tmp_path, "ES256")
    now = int(time.time())

    def kidless(private: bytes) -> bytes:
        claims = {"aud": "ep", "iss": "aks-model-serving", "iat": now, "exp": now + 600, "jti": os.urandom(8).hex()}
        return b"Bearer " + jwt.encode(claims, private, algorithm="ES256").encode()

    a.check(TOKENED, TOKENED.key_id, kidless(privates[1]))  # two checks: the first key's, then its own
    assert len(decoded) == 2
    with pytest.raises(AuthError, match="tokens without one get 4 signature checks a second"):
        a.check(TOKENED, TOKENED.key_id, kidless(signing_key()[0]))  # the two left, then refused
    assert len(decoded) == 4
    with pytest.raises(AuthError, match="tokens without one get 4") as caught:
        a.check(TOKENED, TOKENED.key_id, kidless(privates[0]))
    assert len(decoded) == 4 and caught.value.challenge == 'Bearer error="invalid_token"'
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(privates[0], "ep")[0].encode())  # a kid: no budget
    clock[0] += 0.5  # two checks back
    a.check(TOKENED, TOKENED.key_id, kidless(privates[0]))


def test_each_route_has_its_own_budget_for_tokens_without_a_kid(tmp_path, monkeypatch, decoded) -> None:
    """The budget was the pod's: forged kid-less tokens sent to one route spent it, and every other route's legacy
    tokens were refused. Each route's is kept while it is spent, forgotten once full again (a second unspent)."""
    monkeypatch.setattr(auth, "KIDLESS_CHECKS_PER_S", 4.0)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    privates, a = _three_published(tmp_path, "ES256")
    now = int(time.time())
    routes = [RouteConfig(kind="endpoint", name=f"ep{n}", auth=AuthConfig(key_enabled=False, token_enabled=True),
                          versions=V) for n in range(3)]

    def kidless(private: bytes, route: RouteConfig) -> bytes:
        claims = {"aud": route.name, "iss": "aks-model-serving", "iat": now, "exp": now + 600, "jti": os.urandom(8).hex()}
        return b"Bearer " + jwt.encode(claims, private, algorithm="ES256").encode()

    attacked, other, third = routes
    for _ in range(2):  # three checks, then one and refused: the attacked route's budget spent
        with pytest.raises(AuthError):
            a.check(attacked, attacked.key_id, kidless(signing_key()[0], attacked))
    with pytest.raises(AuthError, match="tokens without one get 4 signature checks a second"):
        a.check(attacked, attacked.key_id, kidless(privates[0], attacked))
    decoded.clear()
    a.check(other, other.key_id, kidless(privates[2], other))  # its own budget: three checks
    assert len(decoded) == 3
    clock[0] += 0.5
    a.check(third, third.key_id, kidless(privates[0], third))
    assert len(a._kidless) == 3
    clock[0] += 1.0  # the attacked and other routes' budgets full again, as if never spent: not kept
    a.check(third, third.key_id, kidless(privates[0], third))
    assert list(a._kidless) == [third.name]


def test_a_padded_token_is_refused_and_takes_no_place_among_the_verified(tmp_path, monkeypatch, decoded) -> None:
    """PyJWT takes a signature with base64 padding, which JWS compact form has none of: each token had a second form,
    both kept as verified, and the forms of a few tokens pushed the tokens of other clients out."""
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 2)
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(None, TokenConfig(public_key_file=str(tmp_path / "pub.pem")))
    first, second = (mint_token(private, "ep")[0].encode() for _ in range(2))
    for token in (first, second):
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + token)
    padded = second + b"=" * (-len(second.rsplit(b".", 1)[1]) % 4)
    assert padded != second
    with pytest.raises(AuthError, match="padding") as caught:
        a.check(TOKENED, TOKENED.key_id, b"Bearer " + padded)
    assert caught.value.challenge == 'Bearer error="invalid_token"'
    decoded.clear()
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + first)
    assert decoded == []


def test_a_request_waits_on_no_file_system_call(keys, tmp_path, monkeypatch) -> None:
    """The key folder was listed and stat-ed inside a request, once a second: 0.5 ms with 100 routes, 5 ms with 1000.
    The router's credentials watch re-reads it (refresh), in a thread."""
    private, public = signing_key()
    (tmp_path / "pub.pem").write_bytes(public)
    a = Authenticator(str(keys), TokenConfig(public_key_file=str(tmp_path / "pub.pem")))

    touched: list[str] = []
    for name in ("stat", "scandir", "listdir", "open"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *args, _name=name, _real=real, **kwargs: (
            touched.append(_name), _real(*args, **kwargs))[1])
    a.check(KEYED, KEYED.key_id, b"Bearer primary-key-1")
    a.check(TOKENED, TOKENED.key_id, b"Bearer " + mint_token(private, "ep")[0].encode())
    monkeypatch.undo()
    assert touched == []
