"""SASL mechanisms (sans-I/O) and TLS contexts, without a broker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl

import pytest

from grete.errors import AuthenticationError, ConfigurationError
from grete.security import (
    SaslOAuthBearer,
    SaslPlain,
    SaslScram,
    _ScramExchange,
    make_ssl_context,
)

# RFC 7677, section 3.
RFC7677_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _rfc_exchange() -> _ScramExchange:
    return _ScramExchange("SCRAM-SHA-256", "user", "pencil", nonce=RFC7677_NONCE)


# ---------------------------------------------------------------- SCRAM


def test_scram_sha256_rfc7677_vector() -> None:
    ex = _rfc_exchange()
    assert ex.mechanism == "SCRAM-SHA-256"
    assert ex.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert ex.step(RFC7677_SERVER_FIRST) == RFC7677_CLIENT_FINAL
    # A correct server signature ends the exchange.
    assert ex.step(RFC7677_SERVER_FINAL) is None


def test_scram_wrong_server_signature_is_refused() -> None:
    ex = _rfc_exchange()
    ex.step(RFC7677_SERVER_FIRST)
    forged = b"v=" + base64.b64encode(b"\x00" * 32)
    with pytest.raises(AuthenticationError, match="signature does not match"):
        ex.step(forged)


@pytest.mark.parametrize(
    "server_final",
    [b"x=whatever", b"v=not*base64!", b""],
    ids=["not-v", "bad-base64", "empty"],
)
def test_scram_malformed_server_final_is_refused(server_final: bytes) -> None:
    ex = _rfc_exchange()
    ex.step(RFC7677_SERVER_FIRST)
    with pytest.raises(AuthenticationError):
        ex.step(server_final)


def test_scram_server_error_is_reported() -> None:
    ex = _rfc_exchange()
    ex.step(RFC7677_SERVER_FIRST)
    with pytest.raises(AuthenticationError, match="invalid-proof"):
        ex.step(b"e=invalid-proof")


@pytest.mark.parametrize("iterations", [1, 4095, 10_000_001])
def test_scram_iteration_count_out_of_bounds_is_refused(iterations: int) -> None:
    ex = _rfc_exchange()
    server_first = RFC7677_SERVER_FIRST.replace(b"i=4096", f"i={iterations}".encode())
    with pytest.raises(AuthenticationError, match=f"{iterations} iterations"):
        ex.step(server_first)


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=someoneelsesnonce123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # not our nonce
        b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # nothing added
    ],
    ids=["foreign", "not-extended"],
)
def test_scram_nonce_must_extend_ours(server_first: bytes) -> None:
    with pytest.raises(AuthenticationError, match="nonce"):
        _rfc_exchange().step(server_first)


@pytest.mark.parametrize(
    "server_first",
    [
        b"garbage",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",  # no salt
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",
        b"r=rOprNGfwEbeRWgbNEkqOxyz,s=@@@,i=4096",
        b"\xff\xfe",
    ],
)
def test_scram_malformed_server_first_is_refused(server_first: bytes) -> None:
    with pytest.raises(AuthenticationError, match="malformed"):
        _rfc_exchange().step(server_first)


def _scram_server_final(
    algo: str, password: str, client_first: bytes, server_first: str, client_final: bytes
) -> bytes:
    """The broker's side of SCRAM: check the client's proof, return v=signature."""
    attrs = dict(p.split("=", 1) for p in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        algo, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", algo)
    stored_key = hashlib.new(algo, client_key).digest()
    without_proof, _, proof = client_final.decode().rpartition(",p=")
    auth = f"{client_first.decode()[3:]},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth, algo)
    recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
    assert hashlib.new(algo, recovered).digest() == stored_key, "client proof is wrong"
    server_key = hmac.digest(salted, b"Server Key", algo)
    return b"v=" + base64.b64encode(hmac.digest(server_key, auth, algo))


@pytest.mark.parametrize(
    ("mechanism", "algo"), [("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-512", "sha512")]
)
def test_scram_round_trip_against_a_server(mechanism: str, algo: str) -> None:
    ex = SaslScram("alice", "s3cret", mechanism=mechanism).exchange()
    assert ex.mechanism == mechanism
    first = ex.first()
    assert first.startswith(b"n,,n=alice,r=")
    nonce = first.decode().split("r=", 1)[1]
    assert len(nonce) >= 24
    salt = base64.b64encode(os.urandom(16)).decode()
    server_first = f"r={nonce}SERVERPART,s={salt},i=4096"
    client_final = ex.step(server_first.encode())
    assert client_final is not None
    assert client_final.startswith(f"c=biws,r={nonce}SERVERPART,p=".encode())
    server_final = _scram_server_final(algo, "s3cret", first, server_first, client_final)
    assert ex.step(server_final) is None


def test_scram_nonces_are_fresh_per_exchange() -> None:
    mech = SaslScram("alice", "pw")
    assert mech.exchange().first() != mech.exchange().first()


def test_scram_username_is_escaped() -> None:
    first = SaslScram("a=b,c", "pw").exchange().first()
    assert first.startswith(b"n,,n=a=3Db=2Cc,r=")


def test_scram_unknown_mechanism_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SCRAM-SHA-1"):
        SaslScram("u", "p", mechanism="SCRAM-SHA-1")


# ---------------------------------------------------------------- PLAIN


def test_plain_message_format() -> None:
    ex = SaslPlain("alice", "alice-secret").exchange()
    assert ex.mechanism == "PLAIN"
    assert ex.first() == b"\x00alice\x00alice-secret"
    assert ex.step(b"") is None


def test_plain_utf8_credentials() -> None:
    assert SaslPlain("jürgen", "pässword").exchange().first() == (
        b"\x00" + "jürgen".encode() + b"\x00" + "pässword".encode()
    )


# ---------------------------------------------------------------- OAUTHBEARER


def test_oauthbearer_message_format() -> None:
    ex = SaslOAuthBearer(lambda: "tok.en.sig").exchange()
    assert ex.mechanism == "OAUTHBEARER"
    assert ex.first() == b"n,,\x01auth=Bearer tok.en.sig\x01\x01"
    # The broker's empty answer means success: nothing more to send.
    assert ex.step(b"") is None


def test_oauthbearer_extensions_are_sorted_and_framed() -> None:
    ex = SaslOAuthBearer(lambda: "t", extensions={"zeta": "1", "alpha": "x"}).exchange()
    assert ex.first() == b"n,,\x01auth=Bearer t\x01alpha=x\x01zeta=1\x01\x01"


def test_oauthbearer_error_challenge_is_answered_once() -> None:
    ex = SaslOAuthBearer(lambda: "t").exchange()
    challenge = b'{"status":"invalid_token"}'
    assert ex.step(challenge) == b"\x01"
    # After the lone 0x01 the broker fails the exchange; a second challenge
    # must not make us loop.
    assert ex.step(challenge) is None


def test_oauthbearer_token_callback_called_per_connection() -> None:
    tokens = iter(["one", "two"])
    mech = SaslOAuthBearer(lambda: next(tokens))
    assert b"Bearer one" in mech.exchange().first()
    assert b"Bearer two" in mech.exchange().first()


# ---------------------------------------------------------------- secrets


def test_reprs_hide_secrets() -> None:
    plain = SaslPlain("alice", "PLAIN-PASSWORD-xyz")
    scram = SaslScram("bob", "SCRAM-PASSWORD-xyz", mechanism="SCRAM-SHA-512")
    oauth = SaslOAuthBearer(lambda: "TOKEN-xyz", extensions={"k": "EXT-SECRET-xyz"})
    assert "alice" in repr(plain)
    assert "PLAIN-PASSWORD-xyz" not in repr(plain)
    assert "PLAIN-PASSWORD-xyz" not in str(plain)
    assert "bob" in repr(scram) and "SCRAM-SHA-512" in repr(scram)
    assert "SCRAM-PASSWORD-xyz" not in repr(scram)
    assert "EXT-SECRET-xyz" not in repr(oauth)
    assert "lambda" not in repr(oauth)


def test_scram_failure_text_hides_password() -> None:
    ex = _ScramExchange("SCRAM-SHA-256", "user", "hunter2-secret", nonce=RFC7677_NONCE)
    ex.step(RFC7677_SERVER_FIRST)
    with pytest.raises(AuthenticationError) as info:
        ex.step(b"v=" + base64.b64encode(b"\x01" * 32))
    assert "hunter2-secret" not in str(info.value)
    assert "hunter2-secret" not in repr(info.value)


# ---------------------------------------------------------------- TLS contexts


def test_ssl_context_defaults_verify_hostname_and_chain() -> None:
    ctx = make_ssl_context()
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_ssl_context_without_hostname_check_still_verifies_chain() -> None:
    ctx = make_ssl_context(check_hostname=False)
    assert ctx.check_hostname is False
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_ssl_keyfile_without_certfile_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="keyfile"):
        make_ssl_context(keyfile="/nonexistent/key.pem")
