"""What every subcommand shares: the client from the global flags, and formatting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from grete.cli.config import (
    ClientSettings,
    ProducerSettings,
    UsageError,
    client_settings,
    parse_pairs,
    producer_settings,
    read_properties,
)
from grete.client import KafkaClient
from grete.errors import ConfigurationError

log = logging.getLogger("grete.cli")

ENV_BOOTSTRAP = "GRETE_BOOTSTRAP_SERVER"


def bootstrap_of(args: argparse.Namespace, file_props: dict[str, str]) -> str:
    servers = getattr(args, "bootstrap_server", None) or os.environ.get(ENV_BOOTSTRAP)
    servers = servers or file_props.get("bootstrap.servers")
    if not servers:
        raise UsageError(f"--bootstrap-server is required (or set {ENV_BOOTSTRAP})")
    return str(servers)


def file_properties(args: argparse.Namespace) -> dict[str, str]:
    path = getattr(args, "command_config", None)
    return read_properties(path) if path else {}


def settings(args: argparse.Namespace) -> tuple[str, ClientSettings, ProducerSettings]:
    """Bootstrap servers, client and producer arguments from the global flags.

    Precedence, as Kafka's tools: dedicated flags over ``--producer-property``
    over ``--command-config``.
    """
    props = file_properties(args)
    client = client_settings(props)
    for key in client.ignored:
        log.debug("--command-config: ignoring %s (no meaning for grete)", key)
    pairs = parse_pairs(getattr(args, "producer_property", None) or [], "--producer-property")
    pairs.update(getattr(args, "flag_properties", {}))
    producer = producer_settings(pairs, from_file=props)
    client.kwargs.update(producer.client)
    return bootstrap_of(args, props), client, producer


def make_client(args: argparse.Namespace, **overrides: Any) -> tuple[KafkaClient, ProducerSettings]:
    servers, client, producer = settings(args)
    kwargs = {"client_id": "grete-cli", **client.kwargs, **overrides}
    try:
        return KafkaClient(servers, **kwargs), producer
    except ConfigurationError as exc:
        # A bootstrap string or a setting that cannot work is the user's to fix.
        raise UsageError(str(exc)) from None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
