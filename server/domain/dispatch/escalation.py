"""Escalation: a task nobody accepted within its window is flagged and the dispatchers told.

Safe with several processes: each task is flagged by a conditional UPDATE
(`... WHERE escalated_at IS NULL AND status = 'assigned'`); only the process whose UPDATE changed
the row writes the audit entry and queues the notification, in the same transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.states import TaskStatus
from server import audit, changes
from server.domain.dispatch.assign import notify_dispatchers
from server.models import Task

BATCH = 500


async def escalate_due(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Flag every `assigned` task whose accept window ended by `now`; returns those this call won.

    Runs in the caller's transaction (the job loop or `liandong jobs escalate` commits it).
    """
    candidates = (
        await session.execute(
            select(Task.id)
            .where(
                Task.status == TaskStatus.ASSIGNED.value,
                Task.escalated_at.is_(None),
                Task.accept_by.is_not(None),
                Task.accept_by <= now,
                Task.deleted_at.is_(None),
            )
            .order_by(Task.accept_by)
            .limit(BATCH)
        )
    ).scalars()
    won: list[uuid.UUID] = []
    for task_id in list(candidates):
        result = await session.execute(
            update(Task)
            .where(
                Task.id == task_id,
                Task.escalated_at.is_(None),
                Task.status == TaskStatus.ASSIGNED.value,
                Task.accept_by <= now,
            )
            .values(escalated_at=now)
            # The task is re-read below and recorded (server.changes) with it.
            .execution_options(synchronize_session=False, recorded=True)
        )
        if getattr(result, "rowcount", 0) != 1:
            continue  # another process flagged it first, or it was accepted meanwhile
        task = await session.get(Task, task_id)
        if task is None:
            continue
        await session.refresh(task)
        changes.record(session, task)
        dispatched = task.dispatched_at.isoformat() if task.dispatched_at else "-"
        await notify_dispatchers(
            session, task, "task.escalated", f"task.escalated:{task.id}:{dispatched}"
        )
        audit.record(
            session,
            None,
            "escalate",
            "task",
            task.id,
            accept_by=task.accept_by,
            unit=task.assignee_unit_id,
            user=task.assignee_user_id,
        )
        won.append(task_id)
    return won
