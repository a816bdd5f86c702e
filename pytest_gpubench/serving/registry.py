"""The server process groups this user's pytest runs started, one file each, so that nothing outlives a run.

A run that ends normally, or on a signal it can handle, stops its own servers and removes their files. A run
killed with SIGKILL cannot: its servers live on (their own session, so no signal of the run's reaches them).
The next run reads the files, finds the servers whose run is gone, and stops them.

A pid alone would name whatever process got that number since: each file holds the group leader's start time
(from /proc, in clock ticks since boot) and the boot id, and a group is only signalled when they still match.
A group whose leader has exited is still the one recorded as long as any member lives: Linux does not hand out
a number that is still some group's id.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from .ports import process_group_members

REGISTRY_ENV = "GPUBENCH_SERVER_REGISTRY"  # a folder of one's own (tests use one each)
STOP_WAIT_S = 5.0  # between SIGTERM and SIGKILL for a server whose run is gone: nobody waits on it any more


def _stat_fields(pid: int) -> list[str] | None:
    try:
        # the command may hold spaces and parentheses: fields after the last ')' are fixed
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when no such process is running (or a zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 of proc(5); fields here start at field 3


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        return tuple(part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part)
    except OSError:
        return ()


@dataclass(frozen=True)
class Owner:
    """The pytest run that started a server: its process (pid and start time) and the run within it (pytester
    runs pytest inside pytest, in one process)."""

    pid: int
    start_ticks: int
    run: str

    @classmethod
    def this_run(cls) -> Owner:
        return cls(os.getpid(), start_ticks(os.getpid()) or 0, uuid.uuid4().hex)

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start_ticks


@dataclass(frozen=True)
class ServerEntry:
    pgid: int
    leader_start_ticks: int
    cmdline: tuple[str, ...]
    name: str
    boot_id: str
    started_at: float  # wall clock, for the message
    owner: Owner

    def describe(self) -> str:
        command = " ".join(self.cmdline)
        command = command if len(command) <= 80 else command[:77] + "..."
        return f"pgid {self.pgid} ({command}, started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started_at))})"

    def live_members(self) -> set[int]:
        """The processes of this very group still running; empty when it is gone or its id now names another."""
        if self.boot_id != _boot_id():
            return set()
        leader = start_ticks(self.pgid)
        if leader is not None:
            if leader != self.leader_start_ticks or (self.cmdline and _cmdline(self.pgid) != self.cmdline):
                return set()  # the number was reused: that is somebody else's process
        members = process_group_members(self.pgid)
        # members start after their leader; one that started earlier cannot be of this group
        return {pid for pid in members if (start_ticks(pid) or 0) >= self.leader_start_ticks}


class ServerRegistry:
    """A folder of files, one per server process group that a run started and has not yet seen stopped."""

    def __init__(self, directory: Path, owner: Owner) -> None:
        self.directory = directory
        self.owner = owner

    @classmethod
    def for_user(cls, owner: Owner | None = None) -> ServerRegistry:
        """$GPUBENCH_SERVER_REGISTRY, else a folder of this user's in the temp dir (not a shared one: a folder
        someone else made there could feed us pids to kill)."""
        configured = os.environ.get(REGISTRY_ENV, "").strip()
        directory = Path(configured) if configured else Path(tempfile.gettempdir()) / f"pytest-gpubench-{os.getuid()}" / "servers"
        return cls(directory, owner or Owner.this_run())

    def _usable(self) -> bool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return self.directory.stat().st_uid == os.getuid()
        except OSError:
            return False

    def _path(self, pgid: int) -> Path:
        return self.directory / f"{pgid}.json"

    def add(self, pgid: int, name: str) -> None:
        """Record a group just launched. Best effort: a registry we cannot write must not fail the cell."""
        if not self._usable():
            return
        entry = ServerEntry(pgid, start_ticks(pgid) or 0, _cmdline(pgid), name, _boot_id(), time.time(), self.owner)
        temporary = self.directory / f".{pgid}.{os.getpid()}.tmp"
        try:
            temporary.write_text(json.dumps(asdict(entry)))
            temporary.replace(self._path(pgid))  # whole or absent: a reader never sees half a file
        except OSError:
            return

    def remove(self, pgid: int) -> None:
        try:
            self._path(pgid).unlink()
        except OSError:
            pass

    def entries(self) -> list[ServerEntry]:
        found = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else ():
            try:
                raw = json.loads(path.read_text())
                raw["cmdline"] = tuple(raw["cmdline"])
                raw["owner"] = Owner(**raw["owner"])
                found.append(ServerEntry(**raw))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # half-written by a run that died mid-write, or not ours: nothing to act on
        return found

    def mine(self) -> list[ServerEntry]:
        return [entry for entry in self.entries() if entry.owner == self.owner]

    def kill_mine(self) -> list[ServerEntry]:
        """SIGKILL every group this run started and has not stopped yet (a second interrupt: no more waiting)."""
        killed = []
        for entry in self.mine():
            if entry.live_members():
                _signal_group(entry.pgid, signal.SIGKILL)
                killed.append(entry)
        return killed

    def stop_mine(self) -> list[ServerEntry]:
        """Stop what this run started and did not stop (its teardown never ran), at the run's very end."""
        return self._stop([entry for entry in self.entries() if entry.owner == self.owner])

    def stop_orphans(self) -> list[ServerEntry]:
        """Stop the servers of runs that are gone (killed with SIGKILL, or an xdist worker that crashed)."""
        return self._stop([entry for entry in self.entries() if not entry.owner.alive()])

    def _stop(self, entries: list[ServerEntry]) -> list[ServerEntry]:
        stopped = []
        for entry in entries:
            if entry.live_members():
                _signal_group(entry.pgid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_WAIT_S
                while entry.live_members() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if entry.live_members():
                    _signal_group(entry.pgid, signal.SIGKILL)
                stopped.append(entry)
            self.remove(entry.pgid)
        return stopped


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


REGISTRY_KEY = pytest.StashKey[ServerRegistry]()


def registry_for(config: pytest.Config) -> ServerRegistry:
    """This run's registry: made once per run (pytest_configure), so every server of the run has one owner."""
    registry = config.stash.get(REGISTRY_KEY, None)
    if registry is None:
        registry = config.stash.setdefault(REGISTRY_KEY, ServerRegistry.for_user())
    return registry
