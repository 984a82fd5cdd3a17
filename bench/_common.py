"""Small helpers shared by the benchmark scripts: percentiles, /proc accounting, machine description."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def pct(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest-rank; None for no values."""
    data = sorted(values)
    if not data:
        return None
    k = max(0, min(len(data) - 1, int(round(q / 100 * len(data) + 0.5)) - 1))
    return data[k]


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


# ----------------------------------------------------------------------------- /proc


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces: split after the closing parenthesis
    return raw[raw.rindex(")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (and its live descendants, and children it has reaped)."""
    total = 0.0
    for p in [pid, *(children_of(pid) if tree else [])]:
        fields = _stat(p)
        if fields:
            # utime stime cutime cstime are fields 14-17 (1-based) = index 11-14 here
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine, in clock ticks, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def tree_rss_mb(pid: int) -> dict[int, float]:
    """RSS per process of ``pid``'s tree (MB)."""
    return {p: r for p in [pid, *children_of(pid)] if (r := rss_mb(p)) is not None}


# ----------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for name in ("tracejudge", "mlflow", "celery", "kombu", "redis", "openai", "httpx", "pydantic", "sqlalchemy", "gunicorn",
                 "psycopg2-binary"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    redis_server = "-"
    binary = shutil.which("redis-server")
    if binary:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        redis_server = next((w.split("=")[1] for w in out.split() if w.startswith("v=")), out.strip())
    postgres = None
    psql = shutil.which("psql") or shutil.which("postgres")
    if psql:
        postgres = subprocess.run([psql, "--version"], capture_output=True, text=True).stdout.strip() or None
    return {
        "postgres": postgres,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis_server": redis_server,
        "packages": versions,
    }


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))
