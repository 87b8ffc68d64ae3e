"""Import jobs any replica can answer for: each job's state, as `GET models/load/{job_id}`
answers it, copied to Redis while the job runs and kept `import_job_ttl_s` after.

The replica that took the import runs it and answers from memory; a poll that a load
balancer sends elsewhere reads the copy. The running replica refreshes the copy
every `HEARTBEAT_S`, so a poll sees each step within that; a copy of an unfinished
job not refreshed for `STALE_AFTER_S` belongs to a replica that stopped, and reads
as failed (whatever that replica had exported is undone by nobody: the caller
imports again, which reuses an export already published).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis

from control_plane.imports.schemas import ImportFailure, ImportJobRead

HEARTBEAT_S = 1.0
STALE_AFTER_S = 10.0
_FINISHED = ("loaded", "failed")


class SharedImportJobs:
    def __init__(self, redis: Redis, namespace: str, ttl_s: int) -> None:
        self.redis = redis
        self._prefix = f"conch:{namespace}:imports:"
        self._ttl_s = ttl_s

    async def publish(self, job: ImportJobRead) -> None:
        copy = {"job": job.model_dump(mode="json"), "seen_at": time.time()}
        await self.redis.set(self._prefix + job.job_id, orjson.dumps(copy), ex=self._ttl_s)

    async def read(self, job_id: str) -> ImportJobRead | None:
        stored = await self.redis.get(self._prefix + job_id)
        if stored is None:
            return None
        copy = orjson.loads(stored)
        job = ImportJobRead.model_validate(copy["job"])
        if job.status not in _FINISHED and time.time() - copy["seen_at"] > STALE_AFTER_S:
            return job.model_copy(
                update={
                    "status": "failed",
                    "finished_at": datetime.fromtimestamp(copy["seen_at"], UTC),
                    "error": ImportFailure(
                        error="ImportInterruptedError",
                        message="the replica running this import stopped before it finished; "
                        "send the import again",
                        details={"last_status": job.status},
                    ),
                }
            )
        return job
