# Every target does its own set-up on a fresh machine (Python 3.10+, Java 17+, Maven).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit lint docs kafka bench bench-encode bench-instructions clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# Apache Kafka's jars from Maven Central (cached in dev/kafka/jars-<version>/).
kafka: $(STAMP)
	$(BIN)/python -c "from grete.testing.jars import ensure_kafka_jars; print(ensure_kafka_jars())"

# The main job: one local broker, a real produce run through the grete CLI
# (grete produce, grete metadata, grete perf as subprocesses), then stop.
demo: kafka
	$(BIN)/python dev/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks dev
	$(BIN)/mypy

# The documentation (HTML in docs/_build/html); any Sphinx warning fails the build.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# The whole suite: lint, docs, unit tests, then integration tests on a 3-broker cluster.
test: kafka lint docs
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

bench: kafka
	$(BIN)/python benchmarks/bench_produce.py --repeat 2

bench-encode: $(STAMP)
	$(BIN)/python benchmarks/bench_encode.py

# Instructions per produce() call, counted by valgrind: an A/B for hot-path
# changes that the machine's noise hides from msgs/s (needs valgrind).
bench-instructions: $(STAMP)
	$(BIN)/python benchmarks/bench_instructions.py

clean:
	rm -rf $(VENV) build dist docs/_build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
