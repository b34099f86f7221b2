"""The synchronous client: gRPC to the easel gateway."""

from __future__ import annotations

import pathlib
import time
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from easel import _core, errors
from easel._core import PathLike, RetryPolicy
from easel.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from easel.models.v1 import models_pb2, models_pb2_grpc

T = TypeVar("T")


class Client:
    """A connection to easel over gRPC (TLS when the URL is ``https://``).

    Args:
        url: the gateway, e.g. ``http://127.0.0.1:8080``; default ``$EASEL_URL``, then
            ``http://127.0.0.1:8080``.
        api_key: an API key (sent as ``x-api-key``); default ``$EASEL_API_KEY`` unless a
            ``token`` is given.
        token: an access token (sent as ``Authorization: Bearer``), instead of a key.
        timeout: seconds each unary call may take (``None``: no client deadline).
        retry: how UNAVAILABLE and rate-limited calls are retried.
        root_certificates: PEM roots for TLS (default: the system's).

    Use it as a context manager, or call :meth:`close`, to release the connection.

    Example::

        with easel.Client() as client:
            paths = client.generate("a lighthouse at dusk", "lighthouse.png", width=768, height=512)
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
            self._channel = grpc.secure_channel(self._settings.target, self._settings.credentials(), options)
        else:
            self._channel = grpc.insecure_channel(self._settings.target, options)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._models = models_pb2_grpc.ModelServiceStub(self._channel)
        self._sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Calls.

    def _call(self, method: Callable[..., T], request: Any) -> T:
        """One unary call, retried as the policy says; failures raise :class:`EaselError`."""
        attempt = 1
        while True:
            try:
                return method(request, metadata=self._settings.metadata, timeout=self._settings.timeout)
            except grpc.RpcError as rpc_error:
                error = errors.from_rpc_error(rpc_error)
                delay = self._settings.retry.delay(attempt, error)
                if delay is None:
                    raise error from None
                self._sleep(delay)
                attempt += 1

    def submit(
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
        """Submits a text-to-image job and returns it (PENDING).

        Zero or omitted parameters take the server's defaults (1024×1024, 20 steps, a random
        seed recorded on the job). ``sampler`` and ``scheduler`` take ComfyUI's names
        (``"dpmpp_2m"``, ``"karras"``) or the enum values. A retry of the same call reuses
        ``idempotency_key`` (a fresh one when not given), so it never makes a second job.

        Raises:
            InvalidArgument: a bad parameter; ``.fields`` says which.
            QuotaExhausted: the tier's concurrent or daily jobs are used up.
        """
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
        return self._call(self._jobs.SubmitJob, request).job

    def submit_workflow(
        self,
        graph: Mapping[str, Any],
        *,
        overrides: Optional[Mapping[Tuple[str, str], Any]] = None,
        keep_workflow_metadata: bool = False,
        idempotency_key: Optional[str] = None,
        start_timeout: Optional[float] = None,
    ) -> jobs_pb2.Job:
        """Submits a raw ComfyUI API-format graph (``{node_id: {"class_type", "inputs"}}``).

        ``overrides`` maps ``(node_id, input_name)`` to a value written into the graph before
        it runs, e.g. ``{("3", "seed"): 7}``.
        """
        request = _core.workflow_request(
            graph,
            overrides=overrides,
            keep_workflow_metadata=keep_workflow_metadata,
            idempotency_key=idempotency_key,
            start_timeout=start_timeout,
        )
        return self._call(self._jobs.SubmitJob, request).job

    def get(self, job_id: str) -> jobs_pb2.Job:
        """The job. Raises :class:`NotFound` for an unknown job or another user's."""
        return self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id)).job

    def list(self, *, statuses: Sequence[int] = (), page_size: int = 100) -> Iterator[jobs_pb2.Job]:
        """Every job of the caller, newest first, across all pages (fetched as iterated);
        only those in ``statuses`` when given (``jobs_pb2.JOB_STATUS_…``)."""
        token = ""
        while True:
            request = _core.list_request(statuses, page_size, token)
            page = self._call(self._jobs.ListJobs, request)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str) -> jobs_pb2.Job:
        """Cancels a pending or running job. A finished job raises :class:`FailedPrecondition`."""
        return self._call(self._jobs.CancelJob, jobs_pb2.CancelJobRequest(job_id=job_id)).job

    def models(self) -> List[models_pb2.Model]:
        """The checkpoints the platform can run."""
        models: List[models_pb2.Model] = []
        token = ""
        while True:
            page = self._call(self._models.ListModels, models_pb2.ListModelsRequest(page_token=token))
            models.extend(page.models)
            token = page.next_page_token
            if not token:
                return models

    def watch(self, job_id: str, *, after_seq: int = 0, timeout: Optional[float] = None) -> "JobWatch":
        """Follows a job: yields its events (a snapshot first when ``after_seq`` is 0) until the
        one that moves it to a terminal status.

        A dropped stream (the gateway restarting, a network blip) is resumed from the last
        sequence number seen, so every event is yielded exactly once, in order.
        ``timeout`` bounds the whole watch (:class:`DeadlineExceeded` after it).
        """
        return JobWatch(self, job_id, after_seq, timeout)

    def wait(self, job_id: str, *, timeout: Optional[float] = None) -> jobs_pb2.Job:
        """Waits for the job to reach a terminal status and returns it (with its outputs when
        SUCCEEDED). Raises :class:`WaitTimeout` after ``timeout`` seconds."""
        try:
            for _ in self.watch(job_id, timeout=timeout):
                pass
        except errors.DeadlineExceeded as error:
            raise errors.WaitTimeout(f"job {job_id} did not finish within {timeout} s") from error
        return self.get(job_id)

    def download(self, output: jobs_pb2.JobOutput, path: PathLike, *, job_id: Optional[str] = None) -> pathlib.Path:
        """Downloads one output into ``path`` (a file, or a directory to use the output's own
        name) and checks its size and sha256. An expired link is renewed from the job when
        ``job_id`` is given. Returns the file's path."""
        url = _core.output_url(self._settings.base_url, output)
        try:
            return _core.download_to(url, output, path, self._settings.timeout)
        except _core.LinkExpired as expired:
            if job_id is None:
                raise errors.DownloadError(f"the link of {output.artifact_id} was refused ({expired})") from None
            fresh = next((o for o in self.get(job_id).outputs if o.artifact_id == output.artifact_id), None)
            if fresh is None:
                raise errors.DownloadError(f"job {job_id} has no output {output.artifact_id}") from None
            try:
                return _core.download_to(_core.output_url(self._settings.base_url, fresh), fresh, path, self._settings.timeout)
            except _core.LinkExpired as again:
                raise errors.DownloadError(f"the link of {output.artifact_id} was refused ({again})") from None

    def generate(self, prompt: str, path: PathLike, *, timeout: Optional[float] = None, **params: Any) -> List[pathlib.Path]:
        """Submits a text-to-image job, waits for it and downloads its images: ``path`` for one
        image, ``stem-N.ext`` for a batch, or the images' own names inside a directory.

        ``params`` are :meth:`submit`'s. Raises :class:`JobFailed` when the job does not
        succeed and :class:`WaitTimeout` after ``timeout`` seconds.
        """
        job = self.submit(prompt, **params)
        job = self.wait(job.id, timeout=timeout)
        if job.status != jobs_pb2.JOB_STATUS_SUCCEEDED:
            raise errors.JobFailed(job)
        targets = _core.output_paths(job, path)
        return [self.download(output, target, job_id=job.id) for output, target in zip(job.outputs, targets)]


class JobWatch(Iterator[jobs_pb2.JobEvent]):
    """The events of one job, resumed after dropped streams (see :meth:`Client.watch`).

    Attributes:
        last_seq: the sequence number of the last event yielded.
        reconnects: how many times the stream was resumed.
    """

    def __init__(self, client: Client, job_id: str, after_seq: int, timeout: Optional[float]) -> None:
        self._client = client
        self.job_id = job_id
        self.last_seq = after_seq
        self.reconnects = 0
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stream: Optional[Iterator[jobs_pb2.WatchJobResponse]] = None
        self._failures = 0
        self._done = False

    def __iter__(self) -> "JobWatch":
        return self

    def _open(self) -> Iterator[jobs_pb2.WatchJobResponse]:
        remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        request = jobs_pb2.WatchJobRequest(job_id=self.job_id, after_seq=self.last_seq)
        stream: Iterator[jobs_pb2.WatchJobResponse] = self._client._jobs.WatchJob(
            request, metadata=self._client._settings.metadata, timeout=remaining
        )
        return stream

    def __next__(self) -> jobs_pb2.JobEvent:
        while not self._done:
            if self._stream is None:
                self._stream = self._open()
            try:
                response = next(self._stream)
            except StopIteration:
                # The server ended the stream before a terminal event (it is shutting down):
                # resume where it stopped.
                self._stream = None
                self.reconnects += 1
                continue
            except grpc.RpcError as rpc_error:
                self._stream = None
                self._back_off(errors.from_rpc_error(rpc_error))
                continue
            event = response.event
            if event.seq <= self.last_seq and self.last_seq:
                continue  # already yielded before a reconnect
            self._failures = 0
            self.last_seq = event.seq
            if _core.is_terminal_event(event):
                self._done = True
                self.close()
            return event
        raise StopIteration

    def _back_off(self, error: errors.EaselError) -> None:
        self._failures += 1
        delay = self._client._settings.retry.delay(self._failures, error)
        if delay is None:
            self._done = True
            raise error from None
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            self._done = True
            raise errors.DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "the watch's timeout passed") from error
        self.reconnects += 1
        self._client._sleep(delay)

    def close(self) -> None:
        """Stops following the job."""
        self._done = True
        stream, self._stream = self._stream, None
        cancel = getattr(stream, "cancel", None)
        if cancel is not None:
            cancel()
