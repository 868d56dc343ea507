"""Provisioner: runs queued jobs under the singleton lease, a bounded number at a time.

Jobs are picked from the store's queue (any replica's API enqueues) and, on taking the
lease, from the job index: a job left "running" by a controller that died is resumed from
the step it was in, or marked "interrupted" once it has been cut short too often, so no
job stays "running" forever. Steps that are done are not run again; "connect" always is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Final

from common import events
from common.redis_client import UNAVAILABLE
from controller import node_status
from controller.provision import model, steps
from controller.provision.credentials import ControllerKey
from controller.provision.model import Job, Step
from controller.provision.ssh import StepFailed
from controller.settings import ControllerSettings
from controller.store import Store

logger = logging.getLogger(__name__)

STOP_GRACE: Final = 10.0
"""Seconds cancelled jobs get to unwind (close their SSH sessions) when the duty stops."""
RESCAN: Final = 2.0
"""Seconds between scans of the job index, for jobs whose queue entry was lost."""


def _reraise_if_cancelled(err: BaseException) -> None:
    """Some client libraries turn a cancellation that hits them mid-read into their own
    connection error; a task being cancelled must still stop, or whoever awaits it
    (the lease handover, the shutdown) waits forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from err


class Provisioner:
    def __init__(self, settings: ControllerSettings, store: Store, key: ControllerKey,
                 agents: steps.AgentCredentialIssuer) -> None:
        self.settings = settings
        self.store = store
        self.jobs = store.jobs
        self.key = key
        self.agents = agents
        self.slot = asyncio.Semaphore(max(1, settings.provision_parallel))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.join_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def running(self) -> set[str]:
        return set(self._tasks)

    async def run(self) -> None:
        """The lease duty: until cancelled, start every job that is waiting."""
        try:
            await self._scan(adopting=True)
            next_scan = time.monotonic() + RESCAN
            while True:
                try:
                    job_id = await self.jobs.next_queued(timeout=1)
                    if job_id is not None:
                        self._start(job_id)
                    if time.monotonic() >= next_scan:
                        await self._scan(adopting=False)
                        next_scan = time.monotonic() + RESCAN
                except UNAVAILABLE as err:
                    _reraise_if_cancelled(err)
                    # Running jobs keep going (or fail their step); new ones wait for Redis.
                    logger.warning("provisioner: Redis unreachable (%s); retrying",
                                   type(err).__name__)
                    await asyncio.sleep(1)
        finally:
            await self._stop_jobs()

    async def _stop_jobs(self) -> None:
        """Cancel the running jobs (they stay "running" in the store, to be resumed) and await
        them, boundedly: a job stuck in a library call must not hold up the lease's handover
        or the controller's shutdown."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in stuck:
            logger.error("%s did not stop within %.0fs of being cancelled", task.get_name(),
                         STOP_GRACE)

    async def _scan(self, *, adopting: bool) -> None:
        for job_id in await self.jobs.active_ids():
            if job_id in self._tasks:
                continue
            job = await self.jobs.get(job_id)
            if job is None:
                continue
            if job.status == model.RUNNING and adopting:
                job.interruptions += 1
                if job.interruptions > model.INTERRUPTIONS_LIMIT:
                    await self._interrupted(job)
                    continue
                logger.info("resuming job %s (%s of %s), cut short by a controller restart",
                            job.id, job.kind, job.node_id)
                await self.jobs.save(job, "job", "resumed",
                                     "resumed after a controller restart")
            self._start(job_id)

    async def _interrupted(self, job: Job) -> None:
        job.status = model.INTERRUPTED
        job.finished_at = time.time()
        job.error = (f"interrupted {job.interruptions - 1} times by controller restarts; "
                     "re-run the job to resume it")
        await self.jobs.save(job, "job", model.INTERRUPTED, job.error)
        if job.kind == "provision":
            await self.store.nodes.transition(
                job.node_id, node_status.FAILED, f"job {job.id} was interrupted",
                expected=[node_status.PROVISIONING])
            await self.store.clusters.update_member(job.cluster_id, job.node_id,
                                                    state=model.MEMBER_FAILED)

    def _start(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._run_job(job_id), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    async def _run_job(self, job_id: str) -> None:
        try:
            job = await self.jobs.get(job_id)
            if job is None or job.status in model.FINISHED:
                return
            run = JobRun(self, job)
            await self.slot.acquire()
            run.ctx.holds_slot = True
            try:
                await run.execute()
            finally:
                # Not held if cancelled while waiting to take it back (see Context.waiting).
                if run.ctx.holds_slot:
                    self.slot.release()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis gone mid-job: the job stays "running" and is resumed on the next scan
            # by whichever replica holds the lease then.
            logger.exception("job %s stopped unexpectedly; it will be resumed", job_id)


class JobRun:
    def __init__(self, provisioner: Provisioner, job: Job) -> None:
        self.p = provisioner
        self.job = job
        self.ctx = steps.Context(
            job=job, settings=provisioner.settings, store=provisioner.store,
            key=provisioner.key, agents=provisioner.agents, slot=provisioner.slot,
            join_lock=provisioner.join_locks[job.cluster_id])

    async def execute(self) -> None:
        job = self.job
        if job.status == model.QUEUED:
            job.attempts += 1
        job.status = model.RUNNING
        job.started_at = job.started_at or time.time()
        job.error = job.failed_step = ""
        job.finished_at = None
        await self.p.jobs.save(job, "job", model.RUNNING, f"attempt {job.attempts}")
        if job.kind == "provision":
            await self.p.store.nodes.transition(
                job.node_id, node_status.PROVISIONING,
                f"job {job.id}: joining cluster {job.cluster_id} as {job.role}")
            joined = job.step("wait_ready").status == model.DONE
            # A resumed job past wait_ready is in the cluster already: keep it "joined".
            await self.ctx.set_member(job_id=job.id, state=None if joined else model.JOINING)
        table = steps.PROVISION if job.kind == "provision" else steps.DEPROVISION
        try:
            for step in job.steps:
                if step.status in (model.DONE, model.SKIPPED) and step.name != "connect":
                    continue
                if not await self._run_step(step, table[step.name]):
                    return
        finally:
            self.ctx.close()
        job.status = model.SUCCEEDED
        job.finished_at = time.time()
        await self.p.jobs.save(job, "job", model.SUCCEEDED,
                               f"{job.kind} of {job.node_id} succeeded")
        logger.info("job %s: %s of %s succeeded", job.id, job.kind, job.node_id)

    async def _run_step(self, step: Step, fn: steps.StepFn) -> bool:
        job = self.job
        step.status = model.RUNNING
        step.started_at = time.time()
        step.finished_at = None
        step.message = ""
        if step.output:
            step.append(f"--- attempt {job.attempts} ---\n")
        self.ctx.log = step.append
        await self.p.jobs.save(job, step.name, model.RUNNING)
        try:
            summary = await fn(self.ctx)
        except StepFailed as err:
            _reraise_if_cancelled(err)
            await self._fail(step, err.message, err.remote)
            return False
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.exception("job %s: step %s raised", job.id, step.name)
            await self._fail(step, f"internal error: {type(err).__name__}", "")
            return False
        step.status = model.SKIPPED if summary.startswith("skipped") else model.DONE
        step.message = self.ctx.redact(summary)
        step.finished_at = time.time()
        await self.p.jobs.save(job, step.name, step.status, step.message)
        return True

    async def _fail(self, step: Step, message: str, remote: str) -> None:
        job = self.job
        redact = self.ctx.redact
        message = redact(message)
        step.status = model.FAILED
        step.message = message
        step.finished_at = time.time()
        job.status = model.FAILED
        job.failed_step = step.name
        job.error = f"step {step.name}: {message}"
        job.finished_at = time.time()
        text = f"{job.kind} of node {job.node_id} failed at step {step.name}: {message}"
        if remote and redact(remote) not in message:
            text += f" (remote error: {redact(remote)[-400:]})"
        # Announced in this order: the step failed, why (this log entry), the job is over.
        await self.p.jobs.save_failed(job, step.name, message, events.system_log_created(
            "error", text, source="provisioner", node_id=job.node_id))
        logger.warning("job %s: %s", job.id, text)
        if job.kind == "provision":
            with contextlib.suppress(StepFailed):
                await self.ctx.set_member(state=model.MEMBER_FAILED)
            await self.p.store.nodes.transition(
                job.node_id, node_status.FAILED, f"job {job.id} failed at step {step.name}",
                expected=[node_status.PROVISIONING])
