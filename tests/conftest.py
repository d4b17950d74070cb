"""Shared test configuration: the real-Kafka fixtures live in grete.testing."""

pytest_plugins = ["grete.testing.pytest_plugin"]
