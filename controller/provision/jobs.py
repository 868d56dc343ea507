"""JobStore: job state in Redis, each change written with its progress event."""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from common import events
from controller.provision import model
from controller.provision.model import Job
from controller.store import Store
from controller.store.core import Staged


class JobStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys

    def stage(self, job: Job) -> Staged:
        job.updated_at = time.time()
        fields = {"job": model.encode_job(job), "status": job.status, "node_id": job.node_id,
                  "cluster_id": job.cluster_id}
        key, index = self.keys.job(job.id), self.keys.jobs
        score = job.created_at

        def write(pipe: Pipeline) -> None:
            pipe.hset(key, mapping=fields)
            pipe.zadd(index, {job.id: score})
        return write

    async def save(self, job: Job, step: str, status: str, message: str = "",
                   extra: Sequence[Staged] = ()) -> None:
        """Persist the job and announce the step's new status in one transaction."""
        event = events.job_progress(job.id, job.node_id, step, status,
                                    cluster_id=job.cluster_id, message=message)
        await self.store.commit([self.stage(job), *extra], event)

    async def get(self, job_id: str) -> Job | None:
        raw = await self.store.redis.hget(self.keys.job(job_id), "job")
        return model.decode_job(raw) if raw else None

    async def recent(self, *, node_id: str = "", cluster_id: str = "", limit: int = 100
                   ) -> list[Job]:
        ids = await self.store.redis.zrevrange(self.keys.jobs, 0, -1)
        jobs: list[Job] = []
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id.decode()), "job", "node_id", "cluster_id")
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
        ids = await self.store.redis.zrange(self.keys.jobs, 0, -1)
        if not ids:
            return []
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id.decode()), "status")
            statuses = await pipe.execute()
        return [i.decode() for i, s in zip(ids, statuses, strict=True)
                if s is not None and s.decode() in model.ACTIVE]

    def enqueue_writes(self, jobs: Sequence[Job]) -> list[Staged]:
        """Writes that store new (or re-queued) jobs, announce them and wake the
        provisioner; the caller commits them in its own transaction."""
        queue = self.keys.job_queue
        writes: list[Staged] = []
        for job in jobs:
            writes.append(self.stage(job))
            event = events.job_progress(job.id, job.node_id, "job", job.status,
                                        cluster_id=job.cluster_id)

            def wake(pipe: Pipeline, job_id: str = job.id, event: events.Event = event) -> None:
                self.store.stage_event(pipe, event)
                pipe.rpush(queue, job_id)
            writes.append(wake)
        return writes
