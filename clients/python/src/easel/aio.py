"""The asynchronous client, on ``grpc.aio``: the same calls as :class:`easel.Client`, awaited."""

from __future__ import annotations

import asyncio
import pathlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import grpc
import grpc.aio

from easel import _core, errors
from easel._core import PathLike, RetryPolicy
from easel.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from easel.models.v1 import models_pb2, models_pb2_grpc

T = TypeVar("T")


class AsyncClient:
    """A connection to easel over ``grpc.aio``; see :class:`easel.Client` for the arguments.

    Create it inside a running event loop and close it with ``await client.close()`` or
    ``async with``. Any number of calls and watches may run on it at once.

    Example::

        async with easel.AsyncClient() as client:
            job = await client.submit("a lighthouse at dusk")
            async for event in client.watch(job.id):
                print(event.seq, event.WhichOneof("kind"))
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: Optional[float] = 30.0,
        retry: Optional[RetryPolicy] = None,
        root_certificates: Optional[bytes] = None,
    ) -> None:
        self._settings = _core.Settings.resolve(url, api_key, token, timeout, retry, root_certificates)
        options = list(_core.CHANNEL_OPTIONS)
        if self._settings.secure:
            self._channel = grpc.aio.secure_channel(self._settings.target, self._settings.credentials(), options)
        else:
            self._channel = grpc.aio.insecure_channel(self._settings.target, options)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def close(self) -> None:
        """Closes the connection."""
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        attempt = 1
        while True:
            try:
                return await method(request, metadata=self._settings.metadata, timeout=self._settings.timeout)
            except grpc.aio.AioRpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
                delay = self._settings.retry.delay(attempt, error)
                if delay is None:
                    raise error from None
                await self._sleep(delay)
                attempt += 1

    async def submit(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        width: int = 0,
        height: int = 0,
        steps: int = 0,
        cfg_scale: Optional[float] = None,
        sampler: Optional[Union[int, str]] = None,
        scheduler: Optional[Union[int, str]] = None,
        seed: Optional[int] = None,
        checkpoint: str = "",
        batch_size: int = 0,
        keep_workflow_metadata: bool = False,
        idempotency_key: Optional[str] = None,
        start_timeout: Optional[float] = None,
    ) -> jobs_pb2.Job:
        """Submits a text-to-image job; see :meth:`easel.Client.submit`."""
        request = _core.text_to_image_request(
            prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            cfg_scale=cfg_scale,
            sampler=sampler,
            scheduler=scheduler,
            seed=seed,
            checkpoint=checkpoint,
            batch_size=batch_size,
            keep_workflow_metadata=keep_workflow_metadata,
            idempotency_key=idempotency_key,
            start_timeout=start_timeout,
        )
        return (await self._call(self._jobs.SubmitJob, request)).job

    async def submit_workflow(
        self,
        graph: Mapping[str, Any],
        *,
        overrides: Optional[Mapping[Tuple[str, str], Any]] = None,
        keep_workflow_metadata: bool = False,
        idempotency_key: Optional[str] = None,
        start_timeout: Optional[float] = None,
    ) -> jobs_pb2.Job:
        """Submits a raw ComfyUI graph; see :meth:`easel.Client.submit_workflow`."""
        request = _core.workflow_request(
            graph,
            overrides=overrides,
            keep_workflow_metadata=keep_workflow_metadata,
            idempotency_key=idempotency_key,
            start_timeout=start_timeout,
        )
        return (await self._call(self._jobs.SubmitJob, request)).job

    async def get(self, job_id: str) -> jobs_pb2.Job:
        """The job; :class:`NotFound` for an unknown job or another user's."""
        return (await self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))).job

    async def list(self, *, statuses: Sequence[int] = (), page_size: int = 100) -> AsyncIterator[jobs_pb2.Job]:
        """Every job of the caller, newest first, across all pages; see :meth:`easel.Client.list`."""
        token = ""
        while True:
            request = _core.list_request(statuses, page_size, token)
            page = await self._call(self._jobs.ListJobs, request)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def cancel(self, job_id: str) -> jobs_pb2.Job:
        """Cancels a pending or running job; see :meth:`easel.Client.cancel`."""
        return (await self._call(self._jobs.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id))).job

    async def models(self) -> List[models_pb2.Model]:
        """The checkpoints the platform can run."""
        models: List[models_pb2.Model] = []
        token = ""
        while True:
            page = await self._call(self._models.ListModels, models_pb2.ListModelsRequest(page_token=token))
            models.extend(page.models)
            token = page.next_page_token
            if not token:
                return models

    def watch(self, job_id: str, *, after_seq: int = 0, timeout: Optional[float] = None) -> "AsyncJobWatch":
        """Follows a job, resuming dropped streams; see :meth:`easel.Client.watch`.

        Use it as ``async for event in client.watch(job_id)``."""
        return AsyncJobWatch(self, job_id, after_seq, timeout)

    async def wait(self, job_id: str, *, timeout: Optional[float] = None) -> jobs_pb2.Job:
        """Waits for a terminal status; see :meth:`easel.Client.wait`."""
        try:
            async for _ in self.watch(job_id, timeout=timeout):
                pass
        except errors.DeadlineExceeded as error:
            raise errors.WaitTimeout(f"job {job_id} did not finish within {timeout} s") from error
        return await self.get(job_id)

    async def download(self, output: jobs_pb2.JobOutput, path: PathLike, *, job_id: Optional[str] = None) -> pathlib.Path:
        """Downloads one output (in a worker thread); see :meth:`easel.Client.download`."""
        url = _core.output_url(self._settings.base_url, output)
        try:
            return await asyncio.to_thread(_core.download_to, url, output, path, self._settings.timeout)
        except _core.LinkExpired as expired:
            if job_id is None:
                raise errors.DownloadError(f"the link of {output.artifact_id} was refused ({expired})") from None
            fresh = next((o for o in (await self.get(job_id)).outputs if o.artifact_id == output.artifact_id), None)
            if fresh is None:
                raise errors.DownloadError(f"job {job_id} has no output {output.artifact_id}") from None
            url = _core.output_url(self._settings.base_url, fresh)
            try:
                return await asyncio.to_thread(_core.download_to, url, fresh, path, self._settings.timeout)
            except _core.LinkExpired as again:
                raise errors.DownloadError(f"the link of {output.artifact_id} was refused ({again})") from None

    async def generate(
        self, prompt: str, path: PathLike, *, timeout: Optional[float] = None, **params: Any
    ) -> List[pathlib.Path]:
        """Submit, wait and download; see :meth:`easel.Client.generate`."""
        job = await self.submit(prompt, **params)
        job = await self.wait(job.id, timeout=timeout)
        if job.status != jobs_pb2.JOB_STATUS_SUCCEEDED:
            raise errors.JobFailed(job)
        targets = _core.output_paths(job, path)
        return [await self.download(output, target, job_id=job.id) for output, target in zip(job.outputs, targets)]


class AsyncJobWatch(AsyncIterator[jobs_pb2.JobEvent]):
    """The events of one job, resumed after dropped streams (see :meth:`AsyncClient.watch`).

    Attributes:
        last_seq: the sequence number of the last event yielded.
        reconnects: how many times the stream was resumed.
    """

    def __init__(self, client: AsyncClient, job_id: str, after_seq: int, timeout: Optional[float]) -> None:
        self._client = client
        self.job_id = job_id
        self.last_seq = after_seq
        self.reconnects = 0
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stream: Optional[Any] = None
        self._failures = 0
        self._done = False

    def __aiter__(self) -> "AsyncJobWatch":
        return self

    def _open(self) -> Any:
        remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        request = jobs_pb2.WatchJobRequest(job_id=self.job_id, after_seq=self.last_seq)
        return self._client._jobs.WatchJob(request, metadata=self._client._settings.metadata, timeout=remaining)

    async def __anext__(self) -> jobs_pb2.JobEvent:
        while not self._done:
            if self._stream is None:
                self._stream = self._open()
            try:
                response = await self._stream.read()
            except grpc.aio.AioRpcError as rpc_error:
                self._stream = None
                await self._back_off(errors.from_rpc_error(rpc_error))
                continue
            if response is grpc.aio.EOF:
                # Ended before a terminal event (the server is shutting down): resume.
                self._stream = None
                self.reconnects += 1
                continue
            event = response.event
            if event.seq <= self.last_seq and self.last_seq:
                continue  # already yielded before a reconnect
            self._failures = 0
            self.last_seq = event.seq
            if _core.is_terminal_event(event):
                self.close()
            return event
        raise StopAsyncIteration

    async def _back_off(self, error: errors.EaselError) -> None:
        self._failures += 1
        delay = self._client._settings.retry.delay(self._failures, error)
        if delay is None:
            self._done = True
            raise error from None
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            self._done = True
            raise errors.DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "the watch's timeout passed") from error
        self.reconnects += 1
        await self._client._sleep(delay)

    def close(self) -> None:
        """Stops following the job."""
        self._done = True
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()
