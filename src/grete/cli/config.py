"""Java-client-style configuration for the CLI: ``--command-config`` files and
``--producer-property`` pairs, translated to grete's keyword arguments.

Kafka's own tools take the same files, so a properties file that works with
``kafka-console-producer.sh --command-config`` works here too, as far as grete
has the feature (PEM trust/key stores only: Python's ssl module cannot read JKS).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grete.protocol.compression import CompressionType
from grete.security import SaslMechanism, SaslPlain, SaslScram

__all__ = [
    "ClientSettings",
    "UsageError",
    "client_settings",
    "parse_acks",
    "parse_compression",
    "parse_properties",
    "producer_settings",
    "read_properties",
]


class UsageError(Exception):
    """A flag, property or config file that cannot work: exit status 2, one line."""


# ----------------------------------------------------------------------------- properties


def _unescape(text: str) -> str:
    """java.util.Properties escapes: \\t \\n \\r \\f, \\uXXXX, and \\x for any other x."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:  # bounded: i grows every round
        c = text[i]
        if c != "\\" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
        i += 2
    return "".join(out)


def _logical_lines(text: str) -> Iterable[str]:
    """Physical lines joined where one ends in an odd number of backslashes."""
    pending = ""
    for raw in text.splitlines():
        line = raw.lstrip() if pending else raw
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_properties(text: str) -> dict[str, str]:
    """Parse ``java.util.Properties`` text: ``key=value``, ``key: value`` or
    ``key value``; ``#``/``!`` comments; backslash continuations and escapes."""
    props: dict[str, str] = {}
    for line in _logical_lines(text):
        stripped = line.lstrip()
        if not stripped or stripped[0] in "#!":
            continue
        # The key ends at the first unescaped '=', ':' or whitespace.
        m = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:]?\s*(.*)$", stripped, re.DOTALL)
        assert m is not None  # the pattern matches any string
        props[_unescape(m.group(1))] = _unescape(m.group(2))
    return props


def read_properties(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--command-config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--command-config {path}: not UTF-8 text") from None
    return parse_properties(text)


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["k=v", ...]`` from a repeatable flag; later pairs win."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- client


@dataclass
class ClientSettings:
    """What goes to :class:`grete.KafkaClient`, besides the bootstrap servers."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    security_protocol: str = "PLAINTEXT"
    #: Keys that were read but have no meaning for grete (said so under --verbose).
    ignored: list[str] = field(default_factory=list)


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_JAAS_OPTION = re.compile(r'([A-Za-z_][\w.]*)\s*=\s*"((?:[^"\\]|\\.)*)"')

# Keys of Java client configs that grete understands, or accepts as harmless
# because they describe what grete does anyway.
_CLIENT_KEYS = {
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.jaas.config",
    "sasl.username",
    "sasl.password",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.ca.location",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "client.id",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "metadata.max.age.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "allow.auto.create.topics",
}
# Java settings a properties file commonly carries that need nothing from us.
_HARMLESS = re.compile(
    r"^(ssl\.(protocol|enabled\.protocols|truststore\.password)|sasl\.kerberos\..*)$"
)


def parse_jaas(config: str) -> tuple[str, str]:
    """``username``/``password`` out of a ``sasl.jaas.config`` value such as
    ``org.apache...ScramLoginModule required username="u" password="p";``."""
    options = {k: _unescape(v) for k, v in _JAAS_OPTION.findall(config)}
    if "username" not in options or "password" not in options:
        raise UsageError('sasl.jaas.config: expected username="..." and password="..."')
    return options["username"], options["password"]


def _ms(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{key}: expected milliseconds, got {value!r}") from None
    if number <= 0:
        raise UsageError(f"{key}: must be positive, got {value!r}")
    return number


def _bool(key: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise UsageError(f"{key}: expected true or false, got {value!r}")


def _existing(key: str, value: str) -> str:
    if not Path(value).is_file():
        raise UsageError(f"{key}: no such file {value!r}")
    return value


def client_settings(props: Mapping[str, str]) -> ClientSettings:
    """Translate Java-style client properties into :class:`KafkaClient` arguments."""
    out = ClientSettings()
    kw = out.kwargs
    protocol = props.get("security.protocol", "PLAINTEXT").strip().upper()
    if protocol not in _PROTOCOLS:
        raise UsageError(
            f"security.protocol: expected one of {', '.join(_PROTOCOLS)}, got {protocol!r}"
        )
    out.security_protocol = protocol
    if "client.id" in props:
        kw["client_id"] = props["client.id"]
    for key, arg in (
        ("request.timeout.ms", "socket_timeout_ms"),
        ("socket.connection.setup.timeout.ms", "connect_timeout_ms"),
        ("metadata.max.age.ms", "metadata_max_age_ms"),
        ("reconnect.backoff.ms", "reconnect_backoff_ms"),
        ("reconnect.backoff.max.ms", "reconnect_backoff_max_ms"),
    ):
        if key in props:
            kw[arg] = _ms(key, props[key])
    if "allow.auto.create.topics" in props:
        kw["allow_auto_create_topics"] = _bool(
            "allow.auto.create.topics", props["allow.auto.create.topics"]
        )

    if "SSL" in protocol:
        kw.update(_ssl_kwargs(props))
    if protocol.startswith("SASL"):
        kw["sasl"] = _sasl(props)
    for key in sorted(props):
        if key in _CLIENT_KEYS or _HARMLESS.match(key):
            continue
        if key not in PRODUCER_KEYS:
            out.ignored.append(key)
    if "SSL" not in protocol:
        out.ignored += [k for k in sorted(props) if k.startswith("ssl.")]
    if not protocol.startswith("SASL"):
        out.ignored += [k for k in sorted(props) if k.startswith("sasl.")]
    return out


def _ssl_kwargs(props: Mapping[str, str]) -> dict[str, Any]:
    kw: dict[str, Any] = {"ssl": True}
    for key in ("ssl.truststore.type", "ssl.keystore.type"):
        kind = props.get(key, "PEM").strip().upper()
        if kind != "PEM":
            # Python's ssl module reads PEM only; say how to get there.
            raise UsageError(
                f"{key}={kind}: grete reads PEM files only "
                "(convert with keytool -importkeystore / openssl pkcs12)"
            )
    ca = props.get("ssl.ca.location") or props.get("ssl.truststore.location")
    if ca:
        kw["ssl_cafile"] = _existing("ssl.truststore.location", ca)
    cert = props.get("ssl.certificate.location")
    key_file = props.get("ssl.key.location")
    keystore = props.get("ssl.keystore.location")
    if cert:
        kw["ssl_certfile"] = _existing("ssl.certificate.location", cert)
        if key_file:
            kw["ssl_keyfile"] = _existing("ssl.key.location", key_file)
    elif keystore:
        # A PEM keystore holds the private key and the certificate chain in
        # one file, which load_cert_chain reads when no separate key is given.
        kw["ssl_certfile"] = _existing("ssl.keystore.location", keystore)
        if key_file:
            kw["ssl_keyfile"] = _existing("ssl.key.location", key_file)
    elif key_file:
        raise UsageError("ssl.key.location given without ssl.certificate.location")
    password = props.get("ssl.key.password") or props.get("ssl.keystore.password")
    if password:
        kw["ssl_password"] = password
    if "ssl.endpoint.identification.algorithm" in props:
        algorithm = props["ssl.endpoint.identification.algorithm"].strip().lower()
        if algorithm not in ("", "https"):
            raise UsageError(
                f"ssl.endpoint.identification.algorithm: expected https or empty, got {algorithm!r}"
            )
        # Java's convention: an empty value turns hostname verification off
        # (the certificate chain is still verified).
        kw["ssl_check_hostname"] = algorithm == "https"
    return kw


def _sasl(props: Mapping[str, str]) -> SaslMechanism:
    mechanism = props.get("sasl.mechanism", "GSSAPI").strip().upper()
    if mechanism not in _MECHANISMS:
        raise UsageError(
            f"sasl.mechanism={mechanism}: the CLI supports {', '.join(_MECHANISMS)}"
            + (" (sasl.mechanism is not set)" if "sasl.mechanism" not in props else "")
        )
    if "sasl.username" in props:
        user, password = props["sasl.username"], props.get("sasl.password", "")
    elif "sasl.jaas.config" in props:
        user, password = parse_jaas(props["sasl.jaas.config"])
    else:
        raise UsageError(f"sasl.mechanism={mechanism} needs sasl.jaas.config or sasl.username")
    if mechanism == "PLAIN":
        return SaslPlain(user, password)
    return SaslScram(user, password, mechanism=mechanism)


# ----------------------------------------------------------------------------- producer


def parse_acks(value: str) -> int:
    low = value.strip().lower()
    if low == "all":
        return -1
    if low in ("0", "1", "-1"):
        return int(low)
    raise UsageError(f"acks: expected 0, 1, -1 or all, got {value!r}")


def parse_compression(value: str) -> CompressionType:
    try:
        return CompressionType[value.strip().upper()]
    except KeyError:
        names = ", ".join(c.name.lower() for c in CompressionType)
        raise UsageError(f"compression.type: expected one of {names}, got {value!r}") from None


def _int(lo: int, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(key: str, value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise UsageError(f"{key}: expected an integer, got {value!r}") from None
        if number < lo or (hi is not None and number > hi):
            bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise UsageError(f"{key}: must be {bound}, got {value!r}")
        return number

    return parse


def _nonneg_ms(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{key}: expected milliseconds, got {value!r}") from None
    if number < 0:
        raise UsageError(f"{key}: must be >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class _Key:
    arg: str
    parse: Callable[[str, str], Any]
    #: Which producers take it: "both", "background" or "sync".
    modes: str = "both"
    help: str = ""


_LEVEL = _int(-131072, 22)

#: Java producer properties the CLI maps onto grete's producer arguments.
PRODUCER_KEYS: dict[str, _Key] = {
    "acks": _Key("required_acks", lambda k, v: parse_acks(v), help="0, 1, -1/all"),
    "compression.type": _Key(
        "compression", lambda k, v: parse_compression(v), help="none|gzip|snappy|lz4|zstd"
    ),
    # KIP-390: one level per codec; only the chosen codec's level is used.
    "compression.gzip.level": _Key("compression_level:gzip", _LEVEL),
    "compression.lz4.level": _Key("compression_level:lz4", _LEVEL),
    "compression.zstd.level": _Key("compression_level:zstd", _LEVEL),
    "linger.ms": _Key("linger_ms", _nonneg_ms, "background"),
    "batch.size": _Key("batch_size", _int(1), help="MESSAGES per batch, not bytes"),
    "enable.idempotence": _Key("enable_idempotence", _bool),
    "retries": _Key("max_retries", _int(0, 2_147_483_647)),
    "retry.backoff.ms": _Key("retry_backoff_ms", _int(0)),
    "retry.backoff.max.ms": _Key("retry_backoff_max_ms", _int(0)),
    "delivery.timeout.ms": _Key("delivery_timeout_ms", _int(1)),
    "request.timeout.ms": _Key("ack_timeout_ms", _int(1, 2**31 - 1)),
    "max.request.size": _Key("max_request_size", _int(1024)),
    "max.in.flight.requests.per.connection": _Key("max_in_flight", _int(1)),
    "buffer.memory": _Key("max_buffer_bytes", _int(1024), "background"),
    "max.block.ms": _Key("queue_full_timeout_ms", _nonneg_ms, "background"),
    # Goes to the KafkaClient, not to the producer (see client_settings).
    "client.id": _Key("client_id", lambda k, v: v),
}


@dataclass
class ProducerSettings:
    background: dict[str, Any] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)


def producer_settings(
    props: Mapping[str, str], *, from_file: Mapping[str, str] | None = None
) -> ProducerSettings:
    """``--producer-property`` pairs (and producer keys of ``--command-config``,
    which they override) as keyword arguments of each producer class.

    Unknown keys are refused when given on the command line (a typo must not
    silently change nothing); a config file may carry other clients' settings.
    """
    merged: dict[str, str] = {k: v for k, v in (from_file or {}).items() if k in PRODUCER_KEYS}
    for key in props:
        if key not in PRODUCER_KEYS:
            known = ", ".join(sorted(PRODUCER_KEYS))
            raise UsageError(f"--producer-property {key}: unknown key (known: {known})")
    merged.update(props)
    out = ProducerSettings()
    levels: dict[str, int] = {}
    for key, value in merged.items():
        spec = PRODUCER_KEYS[key]
        parsed = spec.parse(key, value)
        if spec.arg.startswith("compression_level:"):
            levels[spec.arg.split(":", 1)[1]] = parsed
            continue
        if spec.arg == "client_id":
            out.client["client_id"] = parsed
            continue
        if spec.arg == "ack_timeout_ms":
            # Java uses request.timeout.ms both as the Produce request's own
            # timeout and as the client's wait for an answer; so do we.
            out.client["socket_timeout_ms"] = float(parsed)
        if spec.modes in ("both", "background"):
            out.background[spec.arg] = parsed
        if spec.modes in ("both", "sync"):
            out.sync[spec.arg] = parsed
    codec = out.sync.get("compression", CompressionType.NONE).name.lower()
    if codec in levels:
        out.sync["compression_level"] = out.background["compression_level"] = levels[codec]
    return out
