"""How much work the unit tests' properties, fuzz loops and race loops do.

``GRETE_HYPOTHESIS_PROFILE`` picks the profile (see tests/unit/conftest.py):
unset or ``default`` for the quick everyday run, ``thorough`` for the full counts.
"""

from __future__ import annotations

import os

PROFILE = os.environ.get("GRETE_HYPOTHESIS_PROFILE", "default")
THOROUGH = PROFILE == "thorough"


def effort(thorough: int, default: int) -> int:
    """``thorough`` examples/iterations under the thorough profile, else ``default``."""
    return thorough if THOROUGH else default
