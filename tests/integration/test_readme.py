"""The documentation's examples run: README.md's Quick start and docs/quickstart.rst.

Which blocks run:

* README.md: every ```` ```python ```` fence between ``## Quick start`` and the
  next ``## `` heading;
* docs/quickstart.rst: every ``.. code-block:: python`` directly preceded by a
  ``.. runnable`` comment (a reST comment: invisible in the built docs). Blocks
  without the marker are fragments (they use names defined elsewhere) and are
  only required to compile.

Before running a block, its placeholders become the test cluster's:

* ``"127.0.0.1:9092"`` -> the PLAINTEXT bootstrap, ``"broker1:9093"`` -> SASL_SSL,
  ``"ca.pem"`` -> the cluster's CA file, ``"alice-secret"`` -> alice's password;
* each topic name in ``topics["..."]``, or given as a str literal first
  argument of ``.produce("...", ...)`` (a multi-topic producer's topic), -> a
  fresh topic (3 partitions); one name is one topic wherever it appears.

A block must leave ``results``, a sequence of DeliveryResult; the test checks
each has an offset and that the fresh topics' end offsets add up to what the
blocks produced (the cluster does not auto-create topics, so nothing else
writes there).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from grete import DeliveryResult, KafkaClient

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.rst"

_TOPIC = re.compile(r"""topics\[(["'])([^"']+)\1\]""")
# KafkaProducer.produce("orders", value, ...): a str literal first, then a comma
# (bytes values, b"...", and lists do not match).
_PRODUCE_TOPIC = re.compile(r"""(\.produce\(\s*)(["'])([^"']+)\2(?=\s*,)""")


def readme_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("\n## Quick start")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)


def rst_blocks(path: Path) -> list[tuple[bool, str]]:
    """``(runnable, code)`` of each ``code-block:: python`` of ``path``."""
    lines = path.read_text().splitlines()
    out: list[tuple[bool, str]] = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        before = [x for x in lines[:i] if x.strip()]
        runnable = bool(before) and before[-1].strip() == ".. runnable"
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith(":"):
            j += 1  # directive options
        for x in lines[j:]:
            if x.strip() and not x.startswith((" ", "\t")):
                break
            body.append(x)
        out.append((runnable, textwrap.dedent("\n".join(body)).strip() + "\n"))
    return out


def runnable_blocks() -> list[tuple[str, str]]:
    blocks = [(f"README.md quick start #{n}", b) for n, b in enumerate(readme_blocks(), 1)]
    blocks += [
        (f"quickstart.rst #{n}", code)
        for n, (runnable, code) in enumerate(rst_blocks(QUICKSTART), 1)
        if runnable
    ]
    return blocks


def test_the_documentation_has_runnable_examples() -> None:
    names = [name for name, _ in runnable_blocks()]
    assert any(n.startswith("README") for n in names), "README.md has no Quick start code"
    assert sum(n.startswith("quickstart") for n in names) >= 3, names


def test_every_quickstart_block_compiles() -> None:
    for n, (_, code) in enumerate(rst_blocks(QUICKSTART), 1):
        compile(code, f"quickstart.rst block {n}", "exec")


@pytest.mark.parametrize(("name", "code"), runnable_blocks(), ids=lambda v: str(v)[:40])
def test_example_runs(
    name: str, code: str, kafka_cluster: Any, topic_factory: Any, capsys: Any
) -> None:
    replacements = {
        '"127.0.0.1:9092"': repr(kafka_cluster.bootstrap_servers),
        '"broker1:9093"': repr(kafka_cluster.bootstrap("SASL_SSL")),
        '"ca.pem"': repr(str(kafka_cluster.ca_file)),
        '"alice-secret"': repr(kafka_cluster.users["alice"]),
    }
    for placeholder, actual in replacements.items():
        code = code.replace(placeholder, actual)
    topics: dict[str, str] = {}

    def fresh_name(name: str) -> str:
        if name not in topics:
            topics[name] = topic_factory(partitions=3)
        return topics[name]

    code = _TOPIC.sub(lambda m: f"topics[{fresh_name(m.group(2))!r}]", code)
    code = _PRODUCE_TOPIC.sub(lambda m: f"{m.group(1)}{fresh_name(m.group(3))!r}", code)
    assert topics, f"{name}: no topic to replace"
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    exec(compile(code, name, "exec"), namespace)

    results = namespace.get("results")
    assert results is not None, f"{name} left no `results`"
    assert len(results) > 0
    for r in results:
        assert isinstance(r, DeliveryResult)
        assert r.offset >= 0 and r.partition in range(3)
    with KafkaClient(kafka_cluster.bootstrap_servers) as client:
        written = sum(
            sum(client.topics[t].latest_available_offsets().values()) for t in topics.values()
        )
    # >=: a block may produce more than it keeps in `results` (a callback message).
    assert written >= len(results)
    assert written <= len(results) + 1
    capsys.readouterr()
