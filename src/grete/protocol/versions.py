"""API version negotiation: what grete claims against what a broker advertises.

A broker lists, per api key, the inclusive range of versions it accepts (in
its ApiVersions response); grete's ranges are ``api.min_version`` to
``api.max_version``.  The highest version in both wins, optionally capped by
the caller (e.g. to avoid a version whose semantics a feature does not use).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grete.errors import KafkaError
from grete.protocol.schema import Api

__all__ = ["BrokerVersions", "NoCompatibleVersionError", "parse_api_versions", "pick_version"]

#: api key -> (min_version, max_version), both inclusive
BrokerVersions = Mapping[int, tuple[int, int]]


class NoCompatibleVersionError(KafkaError):
    """grete and the broker share no version of an API."""

    def __init__(
        self,
        api: Api,
        broker_range: tuple[int, int] | None,
        cap: int | None = None,
    ) -> None:
        self.api = api
        self.client_range = (api.min_version, api.max_version)
        self.broker_range = broker_range
        self.cap = cap
        ours = f"v{api.min_version}-v{api.max_version}"
        if cap is not None:
            ours += f" (capped at v{cap})"
        theirs = (
            "does not support it at all"
            if broker_range is None
            else f"supports v{broker_range[0]}-v{broker_range[1]}"
        )
        super().__init__(f"no common version of {api.name}: grete supports {ours}, broker {theirs}")


def pick_version(api: Api, broker_versions: BrokerVersions, cap: int | None = None) -> int:
    """The highest version of ``api`` both sides support, at most ``cap``."""
    broker = broker_versions.get(api.key)
    if broker is None:
        raise NoCompatibleVersionError(api, None, cap)
    high = min(api.max_version, broker[1])
    if cap is not None:
        high = min(high, cap)
    low = max(api.min_version, broker[0])
    if high < low:
        raise NoCompatibleVersionError(api, (broker[0], broker[1]), cap)
    return high


def parse_api_versions(body: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    """The broker's ranges from a decoded ApiVersions response body.

    The body's ``error_code`` is not checked here: on UNSUPPORTED_VERSION the
    broker still lists its ranges, which tells the caller which version to retry.
    Entries with ``min_version > max_version`` cannot be used and are dropped.
    """
    ranges: dict[int, tuple[int, int]] = {}
    for entry in body.get("api_keys") or ():
        low, high = entry["min_version"], entry["max_version"]
        if low <= high:
            ranges[entry["api_key"]] = (low, high)
    return ranges
