"""SIGTERM and SIGHUP end a run the way one Ctrl-C does; a second signal cuts the clean-up short, never loses it.

One Ctrl-C raises KeyboardInterrupt: pytest stops, pytest-benchmark saves the cells that finished, and the
teardowns stop every server's process group. SIGTERM (what CI cancellation and ``timeout`` send) and SIGHUP
(a closed terminal or SSH session) kill Python outright by default: no save, and servers left running under
PID 1. Here they raise the same KeyboardInterrupt, once.

A signal that comes while the run is already stopping (a second Ctrl-C during a server's grace period, the
SIGTERM that follows CI's SIGINT) does not raise again: an exception inside pytest_sessionfinish would be a raw
traceback that skips the rest of the clean-up. It SIGKILLs this run's servers at once instead, so the grace
period ends, and the clean-up finishes. Servers of runs killed with SIGKILL are found in the registry and
stopped by the next run, which says so in one line.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import pytest

from .serving.registry import REGISTRY_KEY, ServerEntry, ServerRegistry

PLUGIN_NAME = "gpubench-interrupts"
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    """A plugin object: installs the handlers at configure, restores them at unconfigure, and stops servers
    that would otherwise outlive a run."""

    def __init__(self, config: pytest.Config, registry: ServerRegistry) -> None:
        self._config = config
        self._registry = registry
        self._previous: dict[int, Any] = {}
        self._received: list[str] = []
        self._stopping = False  # pytest has the interrupt, or is finishing: raising again would only hurt

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (pytest run from a thread: keep Python's defaults)
        for sig in HANDLED:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # nohup, or a background job's SIGINT: whoever started us asked that it be ignored
            self._previous[sig] = previous
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True  # pytest shows where the run was when the signal came, not this line
        name = signal.Signals(signum).name
        self._received.append(name)
        if not self._stopping:
            self._stopping = True
            raise KeyboardInterrupt(f"{name} received")
        # In a signal handler that interrupted the main thread anywhere: no locks (print, logging, the terminal
        # reporter could be half-way through a write of their own), only system calls.
        killed = self._registry.kill_mine()
        what = f"killed {len(killed)} server group{'s' if len(killed) != 1 else ''} at once" if killed else "no server left"
        _say(f"gpubench: {name} while stopping: {what}; finishing the clean-up (finished cells are still saved)")

    @pytest.hookimpl
    def pytest_keyboard_interrupt(self) -> None:
        self._stopping = True
        if self._received and self._received[0] != "SIGINT":
            self._write(f"gpubench: {self._received[0]}: stopping as on Ctrl-C: finished cells are saved, every server "
                 f"is stopped (a second signal kills the servers at once)")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self._stopping = True

    @pytest.hookimpl(trylast=True)  # after the header: the line reads as part of the run's start
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput"):
            return  # the controller sweeps, once
        stopped = self._registry.stop_orphans()
        if stopped:
            self._report("stopped", stopped, "left running by an earlier run that was killed")

    @pytest.hookimpl
    def pytest_unconfigure(self) -> None:
        try:
            # a server whose teardown never ran (pytest itself failed); then those of workers that died
            leftovers = self._registry.stop_mine()
            if not hasattr(self._config, "workerinput"):
                leftovers += self._registry.stop_orphans()
            if leftovers:
                self._report("stopped", leftovers, "that were still running at the end of the run")
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            self._previous.clear()

    def _report(self, verb: str, entries: list[ServerEntry], why: str) -> None:
        count = f"{len(entries)} server{'s' if len(entries) != 1 else ''}"
        self._write(f"gpubench: {verb} {count} {why}: {'; '.join(entry.describe() for entry in entries)}")

    def _write(self, line: str) -> None:
        """Through the terminal reporter where there is one (outside a signal handler, between tests: capture is
        suspended there), so the line lands with the rest of the run's output."""
        reporter = self._config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            _say(line)
            return
        reporter.ensure_newline()
        writer = self._config.get_terminal_writer()
        if writer.width_of_current_line:
            # xdist's progress dots leave the line open without the file name ensure_newline looks for
            writer.line()
        reporter.write_line(line)


def _say(line: str) -> None:
    """One line on the terminal, past pytest's capture (fd 2 is the terminal once capture is suspended, and
    a single write(2) is whole), usable from a signal handler."""
    try:
        os.write(2, (line + "\n").encode(errors="replace"))
    except OSError:
        pass


def register_interrupts(config: pytest.Config) -> None:
    """From pytest_configure: this run's server registry, and the signal handlers that use it."""
    registry = config.stash.setdefault(REGISTRY_KEY, ServerRegistry.for_user())
    interrupts = Interrupts(config, registry)
    interrupts.install()
    config.pluginmanager.register(interrupts, PLUGIN_NAME)
