"""What ``import grete`` costs a process: optional dependencies stay unloaded
until used, and resident memory stays small (eager ssl, cramjam, crc32c's
package __init__ and full 16 Ki-entry varint tables would about double it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Loaded on first use only: TLS (ssl), SCRAM (hashlib, hmac), snappy/lz4/zstd
# (cramjam), and the crc32c package's __init__ (importlib.metadata, argparse).
LAZY = ("ssl", "_ssl", "hashlib", "hmac", "cramjam", "crc32c", "importlib.metadata", "argparse")

# Generous over what ``import grete`` takes (about half of it the bare
# interpreter), well under what the eager imports and full tables would take.
MAX_RSS_MIB = 26

_PROBE = """
import json, sys
import grete
from grete.protocol import crc32c, records
# Peak RSS of this process image (ru_maxrss would count the parent's, pytest's,
# across fork and exec).
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "loaded": sorted(m for m in %r if m in sys.modules),
    "rss_mib": peak / 1024,
    "have_c_crc32c": crc32c.HAVE_C_CRC32C,
    "table_size": records._L,
}))
"""


def _probe() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE % (LAZY,)], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_import_grete_leaves_optional_modules_unloaded_and_rss_small() -> None:
    result = _probe()
    assert result["loaded"] == []
    rss = result["rss_mib"]
    assert isinstance(rss, float) and rss < MAX_RSS_MIB, rss
    # The C CRC-32C is still found (it is a test dependency) without its package.
    assert result["have_c_crc32c"] is True
    assert result["table_size"] == 256
