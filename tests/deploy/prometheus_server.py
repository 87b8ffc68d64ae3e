"""Debian's real Prometheus server, run by a test against local targets."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from conch_embedded.process import free_port

DEADLINE_S = 60.0  # guards against a hang only; every wait ends when its condition holds


def binary(name: str) -> str | None:
    return shutil.which(name)


def local_config(config: Mapping[str, Any], targets: Mapping[str, str], rules: Path) -> Any:
    """`config` (deploy/prometheus/prometheus.yml) with its jobs pointed at `targets`
    (job name -> host:port), scraped and evaluated every second."""
    jobs = []
    for job in config["scrape_configs"]:
        local = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
        local["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        jobs.append(local)
    assert {job["job_name"] for job in jobs} == set(targets)
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


def timestamp(rfc3339: str) -> float:
    """Prometheus' RFC 3339 times (nanoseconds, `Z`) as Unix seconds."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


async def until(condition: Callable[[], Awaitable[bool]], what: str, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-4000:]}"  # noqa: ASYNC240 (failing only)
        await asyncio.sleep(0.1)


@asynccontextmanager
async def prometheus(
    executable: str, config: Mapping[str, Any], workdir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The server, ready, and a client of its HTTP API; its log for failure messages."""
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(dict(config)))
    port = free_port()
    argv = [
        executable,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    log = workdir / "prometheus.log"
    with log.open("w") as out:
        # A start, not a wait: Popen returns at once.
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                assert process.poll() is None, "prometheus exited"
                try:
                    return (await client.get("/-/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(ready, "prometheus did not become ready", log)
            yield client, log
    finally:
        process.terminate()
        process.wait(timeout=30)
