"""Provisioning jobs: the job records, their index and the queue the provisioner pops.

A job is stored as JSON in the hash ``pic:job:{id}`` (field ``job``, plus ``status``,
``node_id`` and ``cluster_id`` for cheap scans), so a controller that takes over the lease
can resume it; ``pic:jobs`` indexes the jobs by creation time and ``pic:jobs:queue`` holds
the ids waiting for the provisioner. Every change of a job is written with its
``job.progress`` event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.asyncio.client import Pipeline

from common import events
from common.redis_client import Redis
from controller.provision import model
from controller.provision.model import Job
from controller.store import tx

if TYPE_CHECKING:
    from controller.store.core import Store



class Jobs:
    def __init__(self, store: Store, client: Redis) -> None:
        self._store = store
        self._redis = client
        self._keys = store.keys

    # --- reading ---------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        raw = await self._redis.hget(self._keys.job(job_id), "job")
        return model.decode_job(raw) if raw else None

    async def status(self, job_id: str) -> str | None:
        raw = await self._redis.hget(self._keys.job(job_id), "status")
        return raw.decode() if raw else None

    async def recent(self, *, node_id: str = "", cluster_id: str = "", limit: int = 100
                     ) -> list[Job]:
        """The newest jobs first, of one node and/or cluster when given."""
        ids = await self._redis.zrevrange(self._keys.jobs, 0, -1)
        jobs: list[Job] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._keys.job(job_id.decode()), "job", "node_id", "cluster_id")
            rows = await pipe.execute()
        for raw, node, cluster in rows:
            if raw is None:
                continue
            if node_id and (node or b"").decode() != node_id:
                continue
            if cluster_id and (cluster or b"").decode() != cluster_id:
                continue
            jobs.append(model.decode_job(raw))
            if len(jobs) >= limit:
                break
        return jobs

    async def active_ids(self) -> list[str]:
        """Jobs queued or running, oldest first (the order they were asked for)."""
        ids = await self._redis.zrange(self._keys.jobs, 0, -1)
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self._keys.job(job_id.decode()), "status")
            statuses = await pipe.execute()
        return [i.decode() for i, s in zip(ids, statuses, strict=True)
                if s is not None and s.decode() in model.ACTIVE]

    async def next_queued(self, timeout: float) -> str | None:
        """The id of the next job waiting for the provisioner, waiting up to ``timeout``
        seconds for one; taken off the queue."""
        popped = await self._redis.blpop([self._keys.job_queue], timeout=timeout)
        return popped[1].decode() if popped else None

    # --- writing ---------------------------------------------------------------------

    async def save(self, job: Job, step: str, status: str, message: str = "") -> None:
        """Persist the job and announce its step's new status, in one transaction."""
        await self._write(job, [events.job_progress(job.id, job.node_id, step, status,
                                                    cluster_id=job.cluster_id,
                                                    message=message)])

    async def save_failed(self, job: Job, step: str, message: str, log: events.Event
                          ) -> None:
        """Persist a job that failed at ``step`` and announce, in this order: the step
        failed (``message``), why (``log``), then the job is over (``job.error``)."""
        await self._write(job, [
            events.job_progress(job.id, job.node_id, step, model.FAILED,
                                cluster_id=job.cluster_id, message=message),
            log,
            events.job_progress(job.id, job.node_id, "job", model.FAILED,
                                cluster_id=job.cluster_id, message=job.error)])

    async def _write(self, job: Job, batch: Sequence[events.Event]) -> None:
        async def body(pipe: Pipeline) -> None:
            pipe.multi()
            self.stage_save(pipe, job)
            self._store.stage_events(pipe, batch)

        await tx.transact(self._redis, [], body, what=f"job {job.id}", field="job")

    # --- for the repositories: staged inside their transactions ----------------------

    def stage_save(self, pipe: Pipeline, job: Job) -> None:
        job.updated_at = time.time()
        pipe.hset(self._keys.job(job.id), mapping={
            "job": model.encode_job(job), "status": job.status, "node_id": job.node_id,
            "cluster_id": job.cluster_id})
        pipe.zadd(self._keys.jobs, {job.id: job.created_at})

    def stage_enqueue(self, pipe: Pipeline, jobs: Sequence[Job]) -> None:
        """Store new (or re-queued) jobs, announce them and wake the provisioner."""
        for job in jobs:
            self.stage_save(pipe, job)
            self._store.stage_event(pipe, events.job_progress(
                job.id, job.node_id, "job", job.status, cluster_id=job.cluster_id))
            pipe.rpush(self._keys.job_queue, job.id)
