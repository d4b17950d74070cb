"""The ``grete`` command line without a broker: parsing, config translation,
exit statuses, and what an unreachable cluster looks like."""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import grete
from grete.cli import build_parser, main
from grete.cli.common import ENV_BOOTSTRAP, bootstrap_of
from grete.cli.config import (
    UsageError,
    client_settings,
    parse_jaas,
    parse_properties,
    producer_settings,
)
from grete.cli.perf import PerfStats, Throttle
from grete.cli.produce import LineReader, Stats, _lines
from grete.protocol.compression import CompressionType
from grete.security import SaslPlain, SaslScram


@pytest.fixture(scope="module", autouse=True)
def _shared_bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The ``python -m grete`` processes below write and reuse one bytecode cache
    outside the tree: with PYTHONDONTWRITEBYTECODE set, as on some CI machines,
    each would compile all of grete again (about 0.25 s a process)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        mp.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.mktemp("pycache")))
        yield


def run_cli(
    *args: str, stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m grete`` as a real process, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "grete", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- properties


def test_parse_properties_forms() -> None:
    text = "\n".join(
        [
            "# a comment",
            "! another",
            "",
            "a=1",
            "b = two words ",
            "c: 3",
            "d 4",
            "e=",
            r"f=line\\",
            "g=one \\",
            "    two",
            r"h\=x=y",
            r"i=tab\there \u0041",
        ]
    )
    props = parse_properties(text)
    assert props == {
        "a": "1",
        "b": "two words ",
        "c": "3",
        "d": "4",
        "e": "",
        "f": "line\\",
        "g": "one two",
        "h=x": "y",
        "i": "tab\there A",
    }


def test_parse_jaas() -> None:
    config = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="al ice" password="p\\"w;d=1";'
    )
    assert parse_jaas(config) == ("al ice", 'p"w;d=1')
    with pytest.raises(UsageError, match="username"):
        parse_jaas("org.apache...PlainLoginModule required;")


# ----------------------------------------------------------------------------- --command-config


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    # Contents do not matter here: nothing loads them until a client connects.
    files = {}
    for name in ("ca.pem", "cert.pem", "key.pem", "keystore.pem"):
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        files[name] = str(path)
    return files


def test_sasl_ssl_with_jaas(pem_files: dict[str, str]) -> None:
    settings = client_settings(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule "
            'required username="alice" password="alice-secret";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": pem_files["ca.pem"],
            "ssl.endpoint.identification.algorithm": "",
            "client.id": "me",
            "request.timeout.ms": "5000",
        }
    )
    kw = settings.kwargs
    assert kw["sasl"] == SaslScram("alice", "alice-secret", mechanism="SCRAM-SHA-512")
    assert kw["ssl"] is True
    assert kw["ssl_cafile"] == pem_files["ca.pem"]
    assert kw["ssl_check_hostname"] is False
    assert kw["client_id"] == "me"
    assert kw["socket_timeout_ms"] == 5000.0
    assert settings.ignored == []


def test_sasl_plaintext_grete_style_credentials() -> None:
    kw = client_settings(
        {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "bob",
            "sasl.password": "pw",
        }
    ).kwargs
    assert kw["sasl"] == SaslPlain("bob", "pw")
    assert "ssl" not in kw


def test_mtls_paths(pem_files: dict[str, str]) -> None:
    kw = client_settings(
        {
            "security.protocol": "SSL",
            "ssl.ca.location": pem_files["ca.pem"],
            "ssl.certificate.location": pem_files["cert.pem"],
            "ssl.key.location": pem_files["key.pem"],
            "ssl.key.password": "secret",
        }
    ).kwargs
    assert kw["ssl_cafile"] == pem_files["ca.pem"]
    assert kw["ssl_certfile"] == pem_files["cert.pem"]
    assert kw["ssl_keyfile"] == pem_files["key.pem"]
    assert kw["ssl_password"] == "secret"
    assert "ssl_check_hostname" not in kw  # default: verify hostnames


def test_pem_keystore_holds_key_and_chain(pem_files: dict[str, str]) -> None:
    kw = client_settings(
        {
            "security.protocol": "SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": pem_files["keystore.pem"],
        }
    ).kwargs
    assert kw["ssl_certfile"] == pem_files["keystore.pem"]
    assert "ssl_keyfile" not in kw


def test_plaintext_ignores_tls_and_sasl_keys(pem_files: dict[str, str]) -> None:
    settings = client_settings(
        {"ssl.truststore.location": pem_files["ca.pem"], "sasl.mechanism": "PLAIN", "x.y": "1"}
    )
    assert settings.kwargs == {}
    assert sorted(settings.ignored) == ["sasl.mechanism", "ssl.truststore.location", "x.y"]


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"security.protocol": "TLS"}, "security.protocol"),
        ({"security.protocol": "SSL", "ssl.truststore.type": "JKS"}, "PEM files only"),
        ({"security.protocol": "SSL", "ssl.truststore.location": "/nonexistent.pem"}, "no such"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI"}, "supports"),
        ({"security.protocol": "SASL_PLAINTEXT"}, "not set"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}, "sasl.jaas.config"),
        ({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "x"}, "https"),
        ({"request.timeout.ms": "soon"}, "milliseconds"),
    ],
)
def test_bad_command_config(props: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        client_settings(props)


# ----------------------------------------------------------------------------- --producer-property


def test_producer_property_mapping() -> None:
    s = producer_settings(
        {
            "acks": "all",
            "compression.type": "zstd",
            "compression.zstd.level": "7",
            "compression.gzip.level": "2",
            "linger.ms": "20",
            "batch.size": "500",
            "enable.idempotence": "false",
            "retries": "4",
            "delivery.timeout.ms": "30000",
            "max.request.size": "2097152",
            "client.id": "cli-test",
            "request.timeout.ms": "7000",
        }
    )
    common = {
        "required_acks": -1,
        "compression": CompressionType.ZSTD,
        "compression_level": 7,  # only the chosen codec's level
        "batch_size": 500,
        "enable_idempotence": False,
        "max_retries": 4,
        "delivery_timeout_ms": 30000,
        "max_request_size": 2097152,
        "ack_timeout_ms": 7000,
    }
    assert s.sync == common
    assert s.background == {**common, "linger_ms": 20.0}
    assert s.client == {"client_id": "cli-test", "socket_timeout_ms": 7000.0}


def test_producer_properties_override_config_file() -> None:
    s = producer_settings({"acks": "1"}, from_file={"acks": "0", "linger.ms": "3", "x": "y"})
    assert s.background == {"required_acks": 1, "linger_ms": 3.0}


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"nope": "1"}, "unknown key"),
        ({"acks": "2"}, "acks"),
        ({"compression.type": "brotli"}, "compression.type"),
        ({"linger.ms": "soon"}, "milliseconds"),
        ({"batch.size": "0"}, "batch.size: must be >= 1"),
        ({"enable.idempotence": "maybe"}, "true or false"),
        ({"retries": "-1"}, "retries"),
    ],
)
def test_bad_producer_property(props: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        producer_settings(props)


def _main_stderr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--producer-property", "nope=1"],
        ["--producer-property", "linger.ms=abc"],
        ["--producer-property", "acks"],
        ["--property", "parse.kee=true"],
        ["--header", "novalue"],
        ["--chunk-size", "0"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The port is closed: a usage error must be found before any connection.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, err = _main_stderr(
        capsys,
        "produce",
        "--bootstrap-server",
        f"127.0.0.1:{closed_port()}",
        "--topic",
        "t",
        *argv,
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("grete: error: "), err


def test_bad_flag_is_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["produce", "--topic", "t", "--acks", "2"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_bootstrap(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_BOOTSTRAP, raising=False)
    code, err = _main_stderr(capsys, "topics")
    assert code == 2
    assert "--bootstrap-server is required" in err


# ----------------------------------------------------------------------------- parsing


def test_global_flags_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(
        ["--bootstrap-server", "h:1", "-v", "--producer-property", "acks=1", "topics"]
    )
    after = parser.parse_args(
        ["topics", "--bootstrap-server", "h:1", "-v", "--producer-property", "acks=1"]
    )
    for args in (before, after):
        assert args.bootstrap_server == "h:1"
        assert args.verbose is True
        assert args.producer_property == ["acks=1"]
    plain = parser.parse_args(["topics"])
    assert plain.bootstrap_server is None and plain.verbose is False


def test_produce_arguments() -> None:
    args = build_parser().parse_args(
        [
            "produce",
            "--topic",
            "t",
            "--parse-key",
            "--key-separator",
            ":",
            "--header",
            "a=1",
            "--header",
            "b=",
            "--compression",
            "lz4",
            "--acks",
            "all",
            "--partitioner",
            "round-robin",
            "--sync",
            "--chunk-size",
            "50",
            "--no-progress",
            "in1.txt",
            "-",
        ]
    )
    assert args.topic == "t" and args.parse_key and args.key_separator == ":"
    assert args.header == ["a=1", "b="]
    assert (args.compression, args.acks, args.partitioner) == ("lz4", "all", "round-robin")
    assert args.sync and args.chunk_size == 50 and args.progress is False
    assert args.files == ["in1.txt", "-"]
    assert build_parser().parse_args(["produce", "--topic", "t"]).progress is None


def test_perf_needs_a_size() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["perf", "--topic", "t", "--num-records", "1"])
    args = build_parser().parse_args(
        ["perf", "--topic", "t", "--num-records", "5", "--record-size", "10", "--json"]
    )
    assert (args.num_records, args.record_size, args.throughput, args.json) == (5, 10, -1, True)


def test_bootstrap_from_env_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = argparse.Namespace(bootstrap_server=None)
    monkeypatch.setenv(ENV_BOOTSTRAP, "env:1")
    assert bootstrap_of(ns, {"bootstrap.servers": "file:1"}) == "env:1"
    monkeypatch.delenv(ENV_BOOTSTRAP)
    assert bootstrap_of(ns, {"bootstrap.servers": "file:1"}) == "file:1"
    assert bootstrap_of(argparse.Namespace(bootstrap_server="flag:1"), {}) == "flag:1"


def _reader(*argv: str) -> LineReader:
    return LineReader(build_parser().parse_args(["produce", "--topic", "t", *argv]))


def test_line_reader() -> None:
    assert _reader().split(b"a:b") == (None, b"a:b")
    keyed = _reader("--parse-key", "--key-separator", "::")
    assert keyed.split(b"k::v::w") == (b"k", b"v::w")
    assert keyed.split(b"::v") == (b"", b"v")
    assert keyed.split(b"novalue") is None
    tab = _reader("--property", "parse.key=true")  # Kafka's default separator: a tab
    assert tab.split(b"k\tv") == (b"k", b"v")
    lenient = _reader("--property", "parse.key=true", "--property", "ignore.error=true")
    assert lenient.split(b"novalue") == (None, b"novalue")
    sep = _reader("--parse-key", "--property", "key.separator=|")
    assert sep.split(b"a|b") == (b"a", b"b")


def test_lines_strip_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\r\nb\n\nc")
    assert list(_lines([str(path)])) == [b"a", b"b", b"", b"c"]
    with pytest.raises(UsageError, match=r"missing\.txt"):
        list(_lines([str(tmp_path / "missing.txt")]))


def test_stats_summarise_failures_once() -> None:
    stats = Stats()
    stats.ack(0, 5, 10)
    stats.ack(0, 6, 10)
    stats.ack(2, 1, 3)
    stats.fail(9, "no key separator on the line")
    stats.fail(4, "no key separator on the line")
    stats.fail(7, ValueError("bad"))
    assert stats.partitions == {0: [2, 6], 2: [1, 1]}
    assert stats.reasons == {"no key separator on the line": [2, 4], "ValueError: bad": [1, 7]}
    assert (stats.acked, stats.bytes_acked, stats.failed) == (3, 23, 3)


def test_perf_stats_percentiles() -> None:
    stats = PerfStats(1000, 60_000, quiet=True)
    for i in range(1, 1001):
        stats.record(float(i), 100, stats.start)
    stats.end = stats.start + 2.0
    s = stats.summary()
    assert s["records"] == 1000 and s["bytes"] == 100_000
    assert s["records_per_sec"] == 500.0
    lat = s["latency_ms"]
    assert lat["avg"] == 500.5 and lat["max"] == 1000.0
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert 490 <= lat["p50"] <= 510 and 940 <= lat["p95"] <= 960


def test_throttle_unlimited_does_not_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("grete.cli.perf.time.sleep", slept.append)
    Throttle(-1, 0.0).wait(10**9)
    assert slept == []
    import time

    Throttle(10, time.monotonic()).wait(5)  # 5 messages at 10/s: half a second ahead
    assert len(slept) == 1 and 0.4 < slept[0] <= 0.5


# ----------------------------------------------------------------------------- real processes


def test_version_matches_package() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"grete {grete.__version__}"


def test_help_lists_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("produce", "perf", "metadata", "topics"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["metadata"], b""),
        (["topics", "--json"], b""),
        (["produce", "--topic", "t"], b"one\ntwo\n"),
        (["perf", "--topic", "t", "--num-records", "10", "--record-size", "10"], b""),
    ],
)
def test_unreachable_cluster_is_one_line(argv: list[str], stdin: bytes) -> None:
    port = closed_port()
    proc = run_cli(*argv, "--bootstrap-server", f"127.0.0.1:{port}", stdin=stdin)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("grete: error: ") and str(port) in lines[0]
    assert "Traceback" not in proc.stderr


def test_verbose_shows_the_traceback() -> None:
    proc = run_cli("-v", "topics", "--bootstrap-server", f"127.0.0.1:{closed_port()}")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("grete: error: ")


def test_bad_flag_exits_2_in_a_real_process() -> None:
    proc = run_cli("perf", "--topic", "t", "--num-records", "many", "--record-size", "1")
    assert proc.returncode == 2
    assert "invalid int value" in proc.stderr


def test_bad_producer_property_exits_2_in_a_real_process() -> None:
    proc = run_cli(
        "--producer-property",
        "acks=most",
        "produce",
        "--topic",
        "t",
        "--bootstrap-server",
        f"127.0.0.1:{closed_port()}",
    )
    assert proc.returncode == 2
    assert proc.stderr == "grete: error: acks: expected 0, 1, -1 or all, got 'most'\n"


def test_command_config_file_errors_exit_2(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.mechanism=OAUTHBEARER\n")
    proc = run_cli("topics", "--bootstrap-server", "127.0.0.1:1", "--command-config", str(props))
    assert proc.returncode == 2
    assert proc.stderr.startswith("grete: error: sasl.mechanism=OAUTHBEARER")
    proc = run_cli("topics", "--command-config", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "missing" in proc.stderr


def test_kafka_tool_spellings() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["produce", "--topic", "t", "--compression-codec", "gzip", "--request-required-acks", "1"]
    )
    assert (args.compression, args.acks) == ("gzip", "1")
    perf = parser.parse_args(
        [
            *("perf", "--topic", "t", "--num-records", "1", "--record-size", "1"),
            *("--producer-props", "acks=1", "linger.ms=2"),
        ]
    )
    assert perf.producer_props == ["acks=1", "linger.ms=2"]


def test_perf_producer_props_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            *("perf", "--bootstrap-server", f"127.0.0.1:{closed_port()}", "--topic", "t"),
            *("--num-records", "1", "--record-size", "1", "--producer-props", "lingr.ms=2"),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("grete: error: --producer-property lingr.ms")
