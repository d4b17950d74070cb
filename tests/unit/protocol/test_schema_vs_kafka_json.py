"""Compare every hand-written Api with Apache Kafka's own message specs.

The specs (``common/message/*.json``) are read straight out of the
kafka-clients jar: ``$GRETE_KAFKA_JARS`` (the jar itself or a directory holding
it), else ``dev/kafka/jars-*/kafka-clients-*.jar`` under the repository root,
where the test harness puts it.  Without a jar the tests are skipped.

For every claimed version of every Api, requests and responses are compared
field by field: name, type, presence, nullability, tagged-ness and tag
number, defaults of scalars, nested struct fields, and flexible-ness.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from grete.protocol.messages import ALL_APIS, APIS_BY_KEY
from grete.protocol.primitives import ZERO_UUID
from grete.protocol.schema import Api, Field, VersionRange, snake_case

REPO_ROOT = Path(__file__).resolve().parents[3]


def _find_jar() -> Path | None:
    env = os.environ.get("GRETE_KAFKA_JARS")
    candidates: list[Path] = []
    if env:
        path = Path(env)
        candidates = [path] if path.is_file() else sorted(path.glob("kafka-clients-*.jar"))
    else:
        candidates = sorted(REPO_ROOT.glob("dev/kafka/jars-*/kafka-clients-*.jar"))
    return candidates[-1] if candidates else None


def _strip_comments(text: str) -> str:
    """Drop // comments, leaving any "//" inside JSON strings (URLs) alone."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


@cache
def _specs() -> dict[tuple[int, str], dict[str, Any]]:
    jar = _find_jar()
    if jar is None:
        pytest.skip("no kafka-clients jar: set GRETE_KAFKA_JARS or fetch it into dev/kafka/jars-*/")
    specs: dict[tuple[int, str], dict[str, Any]] = {}
    with zipfile.ZipFile(jar) as zf:
        for name in zf.namelist():
            if name.startswith("common/message/") and name.endswith(".json"):
                spec = json.loads(_strip_comments(zf.read(name).decode()))
                if spec.get("type") in ("request", "response") and "apiKey" in spec:
                    specs[(spec["apiKey"], spec["type"])] = spec
    return specs


def _expected_default(js: dict[str, Any], nullable: bool) -> Any:
    """Kafka's default for a scalar field (explicit or implied by its type)."""
    t = js["type"]
    d = js.get("default")
    if t in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
        return int(d) if d is not None else 0
    if t == "float64":
        return float(d) if d is not None else 0.0
    if t == "bool":
        return d in (True, "true")
    if t == "string":
        if d == "null":
            assert nullable, js
            return None
        return d if d is not None else ""
    if t == "uuid":
        return ZERO_UUID
    if t == "bytes":
        return b""
    raise AssertionError(t)


def _compare_fields(
    ours: Sequence[Field],
    theirs: Sequence[dict[str, Any]],
    version: int,
    flexible: bool,
    common: dict[str, list[dict[str, Any]]],
    path: str,
) -> None:
    ours_present = [f for f in ours if f.present_in(version)]
    theirs_present = [j for j in theirs if version in VersionRange.parse(j["versions"])]
    assert [f.name for f in ours_present] == [snake_case(j["name"]) for j in theirs_present], (
        f"{path} v{version}: field list differs"
    )
    for f, js in zip(ours_present, theirs_present, strict=True):
        where = f"{path}.{f.name} v{version}"
        assert f.type == js["type"], f"{where}: type {f.type} != {js['type']}"
        nullable = version in VersionRange.parse(js.get("nullableVersions"))
        assert f.nullable_in(version) == nullable, f"{where}: nullability differs"
        tagged = flexible and version in VersionRange.parse(js.get("taggedVersions"))
        assert (flexible and f.tagged_in(version)) == tagged, f"{where}: tagged-ness differs"
        if tagged:
            assert f.tag == js["tag"], f"{where}: tag {f.tag} != {js['tag']}"
        sub = js.get("fields")
        if sub is None and f.is_struct:
            sub = common.get(f.element_type)
        if f.is_struct:
            assert sub is not None, f"{where}: JSON has no fields for {f.type}"
            _compare_fields(f.fields, sub, version, flexible, common, where)
        else:
            assert sub is None and not f.fields, f"{where}: struct-ness differs"
            if f.element_type != "records" and not f.is_array:
                assert f.default_value() == _expected_default(js, nullable), (
                    f"{where}: default {f.default_value()!r} differs"
                )


def _cases() -> list[tuple[Api, str]]:
    return [(api, kind) for api in ALL_APIS for kind in ("request", "response")]


@pytest.mark.parametrize(("api", "kind"), _cases(), ids=lambda x: getattr(x, "name", x))
def test_api_matches_kafka_spec(api: Api, kind: str) -> None:
    spec = _specs().get((api.key, kind))
    assert spec is not None, f"no JSON spec for api key {api.key} {kind}"
    assert spec["name"] == api.name + kind.capitalize()
    valid = VersionRange.parse(spec["validVersions"])
    assert api.min_version in valid and api.max_version in valid, (
        f"{api.name}: claimed v{api.min_version}-v{api.max_version} outside {valid}"
    )
    if spec.get("latestVersionUnstable"):
        assert valid.high is not None and api.max_version < valid.high, (
            f"{api.name}: v{valid.high} is unstable and must not be claimed"
        )
    flexible = VersionRange.parse(spec["flexibleVersions"])
    common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}
    fields = api.request_fields if kind == "request" else api.response_fields
    for version in api.versions:
        assert api.is_flexible(version) == (version in flexible), f"{api.name} v{version}"
        _compare_fields(
            fields, spec["fields"], version, version in flexible, common, api.name + kind
        )


def test_every_api_key_is_unique_and_known() -> None:
    assert len(APIS_BY_KEY) == len(ALL_APIS)
    for api in ALL_APIS:
        assert (api.key, "request") in _specs()


def test_comment_stripping_keeps_urls() -> None:
    text = '// c\n{"a": "http://x" // tail\n}'
    assert json.loads(_strip_comments(text)) == {"a": "http://x"}
