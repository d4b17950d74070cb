"""TLS contexts and SASL mechanisms.

The SASL mechanisms here are sans-I/O state machines: the connection layer
feeds them the broker's bytes (from SaslAuthenticate responses) and sends what
they return. They never touch a socket, so the asyncio front end reuses them.

Credentials never appear in ``repr()``, logs or exception text.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeGuard

from grete.errors import AuthenticationError, ConfigurationError

# ssl (some 4 MiB of resident memory with OpenSSL) and hashlib/hmac are imported
# where TLS and SCRAM need them, so that PLAINTEXT and PLAIN users never load them.
if TYPE_CHECKING:
    import ssl

__all__ = [
    "SaslMechanism",
    "SaslOAuthBearer",
    "SaslPlain",
    "SaslScram",
    "is_ssl_context",
    "make_ssl_context",
]


def is_ssl_context(obj: object) -> TypeGuard[ssl.SSLContext]:
    """Whether ``obj`` is an ``ssl.SSLContext``, without importing ssl: no context
    can exist before something imported it."""
    module = sys.modules.get("ssl")
    return module is not None and isinstance(obj, module.SSLContext)


def make_ssl_context(
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    password: str | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context: the system trust store, or ``cafile`` when given;
    ``certfile``/``keyfile`` add a client certificate (mutual TLS).

    Hostname verification is on unless ``check_hostname=False`` is asked for.
    """
    import ssl  # only TLS users pay for OpenSSL (see the imports)

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.check_hostname = check_hostname
    if not check_hostname:
        # Without hostname checks the certificate chain is still verified.
        ctx.verify_mode = ssl.CERT_REQUIRED
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile, password)
    elif keyfile is not None:
        raise ConfigurationError("ssl keyfile given without certfile")
    return ctx


class SaslExchange:
    """One authentication attempt: ``first()`` gives the first client message,
    ``step(server_bytes)`` the next one, or None when the exchange is done."""

    mechanism: str

    def first(self) -> bytes:
        raise NotImplementedError

    def step(self, server: bytes) -> bytes | None:
        raise NotImplementedError


class SaslMechanism:
    """Configuration of a SASL mechanism; each connection asks for a fresh exchange."""

    mechanism: str = ""

    def exchange(self) -> SaslExchange:
        raise NotImplementedError


@dataclass(frozen=True)
class SaslPlain(SaslMechanism):
    """SASL/PLAIN (RFC 4616). Use it over TLS: the password travels as is."""

    username: str
    password: str = field(repr=False)
    mechanism: str = field(default="PLAIN", init=False)

    def exchange(self) -> SaslExchange:
        return _PlainExchange(self.username, self.password)


class _PlainExchange(SaslExchange):
    mechanism = "PLAIN"

    def __init__(self, username: str, password: str) -> None:
        self._message = b"\x00" + username.encode() + b"\x00" + password.encode()

    def first(self) -> bytes:
        return self._message

    def step(self, server: bytes) -> bytes | None:
        return None


_SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# The Java client refuses fewer iterations than this; so do we, so that a
# malicious broker cannot make the salted password cheap to brute-force.
_SCRAM_MIN_ITERATIONS = 4096
_SCRAM_MAX_ITERATIONS = 10_000_000


@dataclass(frozen=True)
class SaslScram(SaslMechanism):
    """SASL/SCRAM-SHA-256 or SCRAM-SHA-512 (RFC 5802, RFC 7677).

    The broker's final signature is verified, so a broker that does not know
    the password cannot pretend to have authenticated us.
    """

    username: str
    password: str = field(repr=False)
    mechanism: str = "SCRAM-SHA-256"

    def __post_init__(self) -> None:
        if self.mechanism not in _SCRAM_HASHES:
            raise ConfigurationError(
                f"unknown SCRAM mechanism {self.mechanism!r}; use one of {sorted(_SCRAM_HASHES)}"
            )

    def exchange(self) -> SaslExchange:
        return _ScramExchange(self.mechanism, self.username, self.password)


def _scram_name(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class _ScramExchange(SaslExchange):
    def __init__(
        self, mechanism: str, username: str, password: str, *, nonce: str | None = None
    ) -> None:
        self.mechanism = mechanism
        self._hash = _SCRAM_HASHES[mechanism]
        self._password = password.encode()
        # ``nonce`` is for test vectors only; a real exchange draws a fresh one.
        self._nonce = nonce if nonce is not None else base64.b64encode(os.urandom(24)).decode()
        self._first_bare = f"n={_scram_name(username)},r={self._nonce}"
        self._server_signature: bytes | None = None

    def first(self) -> bytes:
        return ("n,," + self._first_bare).encode()

    def step(self, server: bytes) -> bytes | None:
        if self._server_signature is None:
            return self._final(server)
        self._verify(server)
        return None

    def _fail(self, why: str) -> AuthenticationError:
        return AuthenticationError(f"{self.mechanism} authentication failed: {why}")

    def _final(self, server_first: bytes) -> bytes:
        try:
            text = server_first.decode()
            attrs = dict(part.split("=", 1) for part in text.split(","))
            nonce, iterations = attrs["r"], int(attrs["i"])
            salt = base64.b64decode(attrs["s"], validate=True)
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise self._fail("malformed server-first-message") from exc
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise self._fail("server nonce does not extend the client nonce")
        if not _SCRAM_MIN_ITERATIONS <= iterations <= _SCRAM_MAX_ITERATIONS:
            raise self._fail(f"server asked for {iterations} iterations")
        import hashlib  # only SCRAM needs them (see the imports)
        import hmac

        salted = hashlib.pbkdf2_hmac(self._hash, self._password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def _verify(self, server_final: bytes) -> None:
        text = server_final.decode(errors="replace")
        if text.startswith("e="):
            raise self._fail(f"broker says {text[2:]!r}")
        if not text.startswith("v="):
            raise self._fail("malformed server-final-message")
        try:
            got = base64.b64decode(text[2:].split(",", 1)[0], validate=True)
        except ValueError as exc:
            raise self._fail("malformed server signature") from exc
        assert self._server_signature is not None
        import hmac  # see the imports

        if not hmac.compare_digest(got, self._server_signature):
            raise self._fail("the broker's signature does not match (is it the right broker?)")


@dataclass(frozen=True)
class SaslOAuthBearer(SaslMechanism):
    """SASL/OAUTHBEARER (RFC 7628, KIP-255): ``token_callback()`` returns a fresh
    bearer token for each new connection."""

    token_callback: Callable[[], str] = field(repr=False)
    extensions: dict[str, str] = field(default_factory=dict, repr=False)
    mechanism: str = field(default="OAUTHBEARER", init=False)

    def exchange(self) -> SaslExchange:
        return _OAuthExchange(self.token_callback(), self.extensions)


class _OAuthExchange(SaslExchange):
    mechanism = "OAUTHBEARER"

    def __init__(self, token: str, extensions: dict[str, str]) -> None:
        ext = "".join(f"\x01{k}={v}" for k, v in sorted(extensions.items()))
        self._message = f"n,,\x01auth=Bearer {token}{ext}\x01\x01".encode()
        self._sent_final = False

    def first(self) -> bytes:
        return self._message

    def step(self, server: bytes) -> bytes | None:
        if server and not self._sent_final:
            # RFC 7628: an error challenge is answered with a lone 0x01, after
            # which the broker fails the authentication with its message.
            self._sent_final = True
            return b"\x01"
        return None
