"""``grete.protocol.records`` is a facade over the record_* modules: its names
stay importable, the tables' bounds read live, and a patch of a name reaches
the modules that look it up."""

from __future__ import annotations

import pytest

from grete.protocol import record_encode, record_format, record_runs, record_uniform, records


def test_every_public_name_is_there() -> None:
    for name in records.__all__:
        assert getattr(records, name) is not None, name


def test_table_bounds_are_read_live(monkeypatch: pytest.MonkeyPatch) -> None:
    assert records._L == record_format._L and records._O == record_format._O
    monkeypatch.setattr(record_format, "_L", record_format._L + 1)
    assert records._L == record_format._L
    with pytest.raises(AttributeError):
        _ = records._no_such_name  # type: ignore[attr-defined]


def test_a_patch_reaches_the_modules_that_bind_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    real = records._encode_uniform_ts

    def spy(*args: object) -> None:
        return None

    monkeypatch.setattr(records, "_encode_uniform_ts", spy)
    for module in (records, record_encode, record_runs, record_uniform):
        assert module._encode_uniform_ts is spy, module
    monkeypatch.undo()
    for module in (records, record_encode, record_runs, record_uniform):
        assert module._encode_uniform_ts is real, module
