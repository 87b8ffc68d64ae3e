"""What operators read about the async work: recent tasks, and the queues right now.

A listing reads the queue's index of tasks by submission time, newest first, and
keeps what the key may see (`service.may_see`: its own tasks; an admin key, every
task of its project, or of all for a key of no project). The index holds every
task still kept, so a listing reads at most `SCAN_MAX` of its entries: a key whose
tasks are older than that many others' sees fewer than it asked for.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from conch_manifest.priorities import Priority
from control_plane.core.components import Components
from control_plane.core.settings import Settings
from control_plane.jobs import queue_views
from control_plane.jobs.queue import LEVELS
from control_plane.jobs.schemas import TaskStatus, TaskView
from control_plane.jobs.service import may_see, queue_of, task_view
from control_plane.keys.schemas import Principal

MAX_LISTED = 500
SCAN_MAX = 10_000  # index entries one listing reads at most
FORGET_AFTER_WINDOWS = 10  # claim windows a consumer holding nothing is kept, silent
_PAGE = 500


class TaskList(BaseModel):
    tasks: list[TaskView] = Field(description="newest first")
    total: int = Field(description="how many are listed (at most `limit`)")


class WorkerView(BaseModel):
    name: str = Field(description="the replica's consumer: host, process id, a nonce")
    pending: int = Field(description="tasks it has taken and not finished")
    idle_ms: int = Field(
        description="since it last read the queue: a live worker reads at least every "
        "second (renews every third of the claim window while busy); one idle past the "
        "window is listed only while it holds tasks, until another replica takes them over"
    )


class QueuesView(BaseModel):
    depths: dict[Priority, int] = Field(description="tasks waiting for a worker, per priority")
    running: int = Field(
        description="tasks taken by a worker and not finished (those of a replica that "
        "stopped too, until another takes them over)"
    )
    completion_rate_per_s: float = Field(
        description="over the last minute (since its first completion, on a younger queue), "
        "every replica"
    )
    workers: list[WorkerView] = Field(
        description="live workers and those still holding tasks, the least idle first"
    )


async def list_tasks(
    components: Components, key: Principal, *, limit: int, status: TaskStatus | None
) -> TaskList:
    queue = queue_of(components)
    found: list[TaskView] = []
    for start in range(0, SCAN_MAX, _PAGE):
        page = await queue_views.recent_from(queue, start, _PAGE)
        if not page:
            # The index's end: expired tasks are its oldest entries (it is trimmed by
            # submission time, and a task expires a whole TTL after it finished).
            break
        for task in page:
            if may_see(key, task) and (status is None or task.get("status") == status):
                found.append(task_view(task))
                if len(found) == limit:
                    return TaskList(tasks=found, total=len(found))
    return TaskList(tasks=found, total=len(found))


async def queues(components: Components) -> QueuesView:
    queue = queue_of(components)
    # Live: heard from within a claim window. Forgotten: silent ten windows, holding nothing.
    window_ms = int(components.get(Settings).task_claim_after_s * 1000)
    running = await queue_views.running(queue)
    return QueuesView(
        depths=await queue.depths(),  # type: ignore[arg-type]
        running=sum(running[level] for level in LEVELS),
        completion_rate_per_s=round(await queue.completion_rate(), 3),
        workers=[
            WorkerView(name=c.name, pending=c.pending, idle_ms=c.idle_ms)
            for c in await queue_views.consumers(
                queue, live_ms=window_ms, forget_ms=FORGET_AFTER_WINDOWS * window_ms
            )
        ],
    )
