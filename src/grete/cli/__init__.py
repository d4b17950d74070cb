"""The ``grete`` command line: produce lines, measure throughput, look at metadata.

Flags follow Kafka's own tools where those have one (``--bootstrap-server``,
``--command-config``, ``--producer-property``, ``--topic``, ``--num-records``, ...),
so muscle memory and existing properties files carry over.

Exit status: 0 success; 1 a Kafka error (unreachable cluster, a message not
acknowledged); 2 a usage error (bad flags, properties or config file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from grete._version import __version__
from grete.cli.config import PRODUCER_KEYS, UsageError
from grete.errors import KafkaError

__all__ = ["build_parser", "main"]

PROG = "grete"

_PRODUCER_HELP = (
    "a Java producer property (repeatable): "
    + ", ".join(k for k in PRODUCER_KEYS if not k.startswith("compression."))
    + ", compression.<codec>.level. batch.size counts MESSAGES per batch here, not bytes"
)


def _connection_options(*, top: bool) -> argparse.ArgumentParser:
    """The global flags, accepted before and after the subcommand (Kafka's tools
    take them after). Below the subcommand their defaults are SUPPRESS, so a
    flag given before the subcommand is not overwritten by a default."""
    parent = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parent.add_argument_group("connection")
    group.add_argument(
        "--bootstrap-server",
        metavar="HOST:PORT[,...]",
        default=default(None),
        help="brokers to bootstrap from (default: $GRETE_BOOTSTRAP_SERVER)",
    )
    group.add_argument(
        "--command-config",
        metavar="FILE",
        default=default(None),
        help="Java-client properties: security.protocol, sasl.mechanism, sasl.jaas.config "
        "(or sasl.username/sasl.password), ssl.truststore.location/ssl.ca.location (PEM), "
        "ssl.keystore.location or ssl.certificate.location + ssl.key.location, "
        "ssl.endpoint.identification.algorithm, client.id, request.timeout.ms",
    )
    group.add_argument(
        "--producer-property",
        action="append",
        metavar="KEY=VALUE",
        default=default([]),
        help=_PRODUCER_HELP,
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="debug logging to stderr, tracebacks on errors",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    from grete.cli import metadata, perf, produce

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="grete: produce to Apache Kafka from the command line.",
        parents=[_connection_options(top=True)],
        epilog="Exit status: 0 ok, 1 Kafka error or undelivered messages, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_connection_options(top=False)]

    p = sub.add_parser(
        "produce",
        parents=common,
        help="send lines from stdin or files, one message per line",
        description="Send lines from stdin or files, one message per line; a summary "
        "goes to stderr. Exit 0 only if every message was acknowledged.",
    )
    produce.add_arguments(p)
    p.set_defaults(func=produce.run)

    p = sub.add_parser(
        "perf",
        parents=common,
        help="producer throughput and latency (as kafka-producer-perf-test)",
        description="Send --num-records messages and report throughput and latency "
        "(produce() call to delivery callback), as kafka-producer-perf-test.",
    )
    perf.add_arguments(p)
    p.set_defaults(func=perf.run)

    p = sub.add_parser(
        "metadata",
        parents=common,
        help="brokers, topics, partitions (leader, replicas, isr, end offset)",
        description="Brokers and topics with their partitions: leader, replicas, "
        "in-sync replicas and end offsets.",
    )
    metadata.add_arguments(p, offsets=True)
    p.set_defaults(func=metadata.run_metadata)

    p = sub.add_parser(
        "topics",
        parents=common,
        help="topics: name, partitions, replication factor",
        description="A short list of topics: name, partition count, replication factor.",
    )
    metadata.add_arguments(p, offsets=False)
    p.set_defaults(func=metadata.run_topics)
    return parser


def _error(message: str) -> None:
    # One line, whatever the message holds: scripts grep for it.
    text = " ".join(str(message).split())
    sys.stderr.write(f"{PROG}: error: {text}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``grete`` script and of ``python -m grete``."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with usage on bad flags
    verbose = bool(getattr(args, "verbose", False))
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG,
            stream=sys.stderr,
            format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
        )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except KafkaError as exc:
        if verbose:
            traceback.print_exc()
        _error(f"{exc}" if str(exc) else type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (| head): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        # A certificate or key file that TLS cannot load, and the like.
        if verbose:
            traceback.print_exc()
        _error(f"{type(exc).__name__}: {exc}")
        return 1


def entry() -> None:
    sys.exit(main())
