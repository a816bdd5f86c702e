"""Free loopback ports, and who is listening on one: a port that answers must be answered by our server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LISTEN = "0A"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_socket_inodes(port: int) -> set[int] | None:
    """Inodes of sockets listening on ``port`` (IPv4 and IPv6); None where /proc/net is not readable."""
    inodes: set[int] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes if found_table else None


def process_group_members(pgid: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command may hold spaces and parentheses: fields after the last ')' are fixed
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(entry.name))
    return members


def socket_inodes_of(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except OSError:
            continue
    return inodes


def group_listens_on(pgid: int, port: int) -> bool | None:
    """Whether a process of group ``pgid`` holds the listening socket of ``port``; None if /proc cannot tell."""
    listening = listening_socket_inodes(port)
    if listening is None:
        return None
    return bool(listening & socket_inodes_of(process_group_members(pgid)))
