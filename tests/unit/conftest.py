"""Hypothesis profiles for the unit tests, chosen with GRETE_HYPOTHESIS_PROFILE.

The project's rule is that unit tests need no broker and run in seconds, so by
default every property, fuzz loop and race loop runs, but with fewer examples:

- ``default`` (the variable unset): Hypothesis tries 25 examples where a test
  does not say (its own default is 100) and no deadline, so a busy machine
  cannot fail a test on timing; tests with their own counts use the smaller
  number in ``effort(thorough, default)`` (tests/unit/_effort.py). Hypothesis
  still draws new examples on every run and replays the failures it saved.
- ``thorough``: the full counts (Hypothesis's default of 100 examples and 200 ms
  deadline, and each test's own larger numbers), for a release or a change to
  the protocol code::

      GRETE_HYPOTHESIS_PROFILE=thorough .venv/bin/pytest tests/unit

Registered here, in a conftest, because Hypothesis reads the loaded profile when
the test modules' ``@settings`` are created, after this file has run.
"""

from __future__ import annotations

from hypothesis import settings

from ._effort import PROFILE

settings.register_profile("thorough")  # Hypothesis's own defaults, before "default" changes
settings.register_profile("default", max_examples=25, deadline=None)
settings.load_profile(PROFILE)
