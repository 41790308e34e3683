"""The process tree of a test's children, read from /proc: what a stopped lab or image left running."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cmdline", "descendants", "identity", "stat"]


def stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def identity(pid: int) -> str | None:
    """The process's start time: tells a process from a later one that got the same pid."""
    fields = stat(pid)
    return None if fields is None or fields[0] == "Z" else fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its identity."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (fields := stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and (started := identity(child)) is not None:
                found[child] = started
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
