"""The wheel installs with pip into a fresh virtualenv and works there.

Builds grete's wheel (pip fetches the build backend from PyPI, as any user's
pip would), installs it with no extras and no index into a new venv, and
checks the console script and that the core imports without any optional
dependency.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

import grete

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_wheel_installs_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=540,
    )
    (wheel,) = dist.glob("grete-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-index", str(wheel)], check=True, timeout=120
    )
    out = subprocess.run(
        [str(env_dir / "bin" / "grete"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and grete.__version__ in out.stdout
    # The core runs without extras: no crc32c, cramjam or murmurhash2 there.
    code = (
        "import grete, importlib.util as u;"
        "from grete.protocol.records import encode_batch, decode_batches;"
        "b = encode_batch([b'v'], [b'k'], base_timestamp=1);"
        "assert decode_batches(b)[0].records[0].value == b'v';"
        "assert grete.hashing_partitioner is not None;"
        "assert u.find_spec('cramjam') is None and u.find_spec('crc32c') is None;"
        "from grete import CompressionType;"
        "from grete.protocol.compression import compress\n"
        "try:\n compress(CompressionType.ZSTD, b'x')\n"
        "except grete.UnsupportedCodecError as e:\n assert 'grete[codecs]' in str(e); print('ok')"
    )
    run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
    typed = subprocess.run(
        [
            str(py),
            "-c",
            "import grete, pathlib;"
            "print((pathlib.Path(grete.__file__).parent / 'py.typed').exists())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typed.stdout.strip() == "True"
