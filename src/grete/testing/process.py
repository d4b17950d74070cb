"""Child-process hygiene: no JVM may outlive the Python process that started it.

Three layers, because each covers a different way of dying:

* every child leads its own process group (``start_new_session``), so killing the group
  also takes any grandchildren, and a Ctrl-C in the terminal does not reach the JVMs
  before Python has decided what to do;
* an ``atexit`` hook kills every group still registered (normal exit, uncaught
  exception, KeyboardInterrupt);
* on Linux, ``PR_SET_PDEATHSIG`` makes the kernel SIGKILL the child when its parent
  dies, which is the only layer that survives ``kill -9`` of pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "free_ports",
    "kill_group",
    "port_is_free",
    "run",
    "spawn",
    "tail",
    "terminate_group",
    "wait_until",
]

_PR_SET_PDEATHSIG = 1
_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn arming PR_SET_PDEATHSIG, or None where it would do harm or not exist."""
    if not sys.platform.startswith("linux"):
        return None
    # The death signal fires when the *thread* that forked exits, not the process. A
    # broker started from a worker thread would be killed as soon as that thread ended,
    # so only arm it from the main thread, which lives as long as the process.
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # If the parent died between fork and prctl the signal will never come.
        if os.getppid() != parent:
            os._exit(1)

    return arm


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    stdout: IO[bytes] | int | None,
    stderr: IO[bytes] | int | None = subprocess.STDOUT,
    stdin: int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, registered for cleanup at interpreter exit."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        preexec_fn=_pdeathsig_preexec(),
    )
    with _live_lock:
        _live[proc.pid] = proc
    return proc


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived child to completion with the same hygiene as :func:`spawn`.

    Unlike ``subprocess.run`` a timeout kills the child's whole group, not just the
    direct child, and an interrupt (Ctrl-C) while waiting kills it too.
    """
    proc = spawn(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        env=env,
    )
    try:
        out, err = proc.communicate(input.encode() if input is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(
            list(argv),
            timeout,
            output=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        ) from None
    finally:
        if proc.poll() is None:
            kill_group(proc)
        _forget(proc)
    return subprocess.CompletedProcess(
        list(argv), proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def _forget(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live.pop(proc.pid, None)


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL the child's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    _forget(proc)


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM the group, wait up to ``timeout``, then SIGKILL. True if it exited by itself."""
    if proc.poll() is not None:
        kill_group(proc)  # reap stragglers of the group, if any
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
        graceful = True
    except subprocess.TimeoutExpired:
        graceful = False
    kill_group(proc)
    return graceful


@atexit.register
def _kill_all_at_exit() -> None:
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel considers free right now.

    All sockets are held open together so the kernel cannot hand out the same port
    twice; there is still a window before the broker binds, which is why a broker that
    fails to bind is reported with its log rather than retried silently.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``port`` now (SO_REUSEADDR, as the JVM does on Unix)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 40, max_bytes: int = 256 * 1024) -> str:
    """The last ``lines`` lines of a (possibly huge or missing) log file."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join(text[-lines:])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
