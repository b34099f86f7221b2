"""The Python client against the real platform (every service a process, PostgreSQL, Redis,
the S3 server, the ComfyUI simulator): see conftest.py."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
import shutil
import struct
import subprocess
import sys
import time
import uuid
from typing import Dict, List, Tuple

import grpc
import pytest

import easel
from easel import _core
from easel.account.v1 import account_pb2, account_pb2_grpc
from easel.jobs.v1 import jobs_pb2

from conftest import new_user, requires_platform, restart_gateway

pytestmark = requires_platform

# Each simulated sampling step takes 50 ms (the harness's simulator flag): a few steps make a
# quick job, 60 a job that is still running while a test does something to it.
QUICK = 2
SLOW = 60


def png_size(data: bytes) -> Tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_generate_writes_the_png_with_the_jobs_size_and_sha256(client: easel.Client, tmp_path: pathlib.Path) -> None:
    paths = client.generate("a lighthouse at dusk", tmp_path / "lighthouse.png", width=256, height=192, seed=7, steps=QUICK)

    assert paths == [tmp_path / "lighthouse.png"]
    data = paths[0].read_bytes()
    assert png_size(data) == (256, 192)
    job = next(client.list())
    assert job.status == jobs_pb2.JOB_STATUS_SUCCEEDED
    assert job.metadata.seed == 7
    (output,) = job.outputs
    assert output.size_bytes == len(data)
    assert output.sha256 == hashlib.sha256(data).hexdigest()
    assert not list(tmp_path.glob("*.part")), "no partial file is left behind"


def test_watch_resumes_after_the_gateway_restarts_and_yields_every_seq_once(client: easel.Client) -> None:
    job = client.submit("a slow sunset", width=64, height=64, steps=SLOW)
    watch = client.watch(job.id)
    seqs: List[int] = []
    restarted = False
    last = None
    for event in watch:
        seqs.append(event.seq)
        last = event
        if not restarted and event.WhichOneof("kind") == "progress":
            # Mid-stream: the job is running and the stream is open.
            restart_gateway()
            restarted = True

    assert restarted, "the job never reported progress"
    assert watch.reconnects >= 1, "the stream was never dropped"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seqs missing or repeated: {seqs}"
    assert last is not None and last.status_change.status == jobs_pb2.JOB_STATUS_SUCCEEDED
    assert client.get(job.id).seq == seqs[-1]


def test_watch_from_a_seq_yields_only_later_events(client: easel.Client) -> None:
    job = client.wait(client.submit("a cat", width=64, height=64, steps=QUICK).id)
    everything = [event.seq for event in client.watch(job.id)]
    assert everything == [job.seq], "a finished job's watch is its terminal snapshot"
    later = [event.seq for event in client.watch(job.id, after_seq=1)]
    assert later == list(range(2, job.seq + 1))


def test_list_pages_through_every_job(client: easel.Client) -> None:
    submitted = {client.submit(f"cat {n}", width=64, height=64, steps=QUICK).id for n in range(5)}
    listed = [job.id for job in client.list(page_size=2)]
    assert set(listed) == submitted
    assert len(listed) == len(submitted), "no job is listed twice across pages"
    for job_id in submitted:
        client.wait(job_id)
    succeeded = {job.id for job in client.list(statuses=[jobs_pb2.JOB_STATUS_SUCCEEDED])}
    assert succeeded == submitted


def test_submit_workflow_and_keep_the_same_job_for_the_same_idempotency_key(client: easel.Client, tmp_path: pathlib.Path) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 3355443}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "py"}},
    }
    key = f"py-test-{uuid.uuid4()}"
    first = client.submit_workflow(graph, overrides={("1", "width"): 96}, idempotency_key=key)
    again = client.submit_workflow(graph, overrides={("1", "width"): 96}, idempotency_key=key)
    assert again.id == first.id
    job = client.wait(first.id)
    assert job.status == jobs_pb2.JOB_STATUS_SUCCEEDED
    path = client.download(job.outputs[0], tmp_path, job_id=job.id)
    assert png_size(path.read_bytes()) == (96, 64)


def test_cancel_a_running_job_then_cancelling_again_is_a_failed_precondition(client: easel.Client) -> None:
    job = client.submit("a long night", width=64, height=64, steps=SLOW)
    client.cancel(job.id)
    assert client.wait(job.id).status == jobs_pb2.JOB_STATUS_CANCELLED
    with pytest.raises(easel.FailedPrecondition) as raised:
        client.cancel(job.id)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_generate_raises_job_failed_and_wait_times_out(client: easel.Client, tmp_path: pathlib.Path) -> None:
    job = client.submit("a slow dawn", width=64, height=64, steps=SLOW)
    with pytest.raises(easel.WaitTimeout):
        client.wait(job.id, timeout=0.3)
    client.cancel(job.id)
    cancelled = client.wait(job.id)
    failure = easel.JobFailed(cancelled)
    assert "CANCELLED" in str(failure) and failure.job.id == job.id


def test_a_wrong_key_is_unauthenticated() -> None:
    with easel.Client(api_key="easel_nope_" + "x" * 40) as stranger:
        with pytest.raises(easel.Unauthenticated) as raised:
            stranger.get("job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b")
        with pytest.raises(easel.Unauthenticated):
            next(stranger.list())
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_another_users_job_is_not_found(client: easel.Client) -> None:
    job = client.submit("mine", width=64, height=64, steps=QUICK)
    with easel.Client(api_key=new_user()["api_key"]) as other:
        with pytest.raises(easel.NotFound):
            other.get(job.id)
        with pytest.raises(easel.NotFound):
            other.cancel(job.id)
        with pytest.raises(easel.NotFound):
            list(other.watch(job.id))
        assert [j.id for j in other.list()] == []


def test_a_bad_request_names_the_field() -> None:
    with easel.Client(api_key=new_user()["api_key"]) as client:
        with pytest.raises(easel.InvalidArgument) as raised:
            client.submit("a cat", width=100)
        assert list(raised.value.fields) == ["spec.text_to_image.width"]
        assert "multiple of 8" in raised.value.fields["spec.text_to_image.width"]
        with pytest.raises(easel.InvalidArgument) as raised:
            client.submit("   ")
        assert list(raised.value.fields) == ["spec.text_to_image.prompt"]


def test_over_the_rate_limit_raises_rate_limited_with_retry_after_and_retries_honour_it() -> None:
    # The harness gives the free tier 30 requests a minute with a burst of 4.
    key = new_user("free")["api_key"]
    with easel.Client(api_key=key, retry=easel.RetryPolicy(max_attempts=1)) as impatient:
        with pytest.raises(easel.RateLimited) as raised:
            for _ in range(20):
                next(impatient.list(), None)
    error = raised.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.retry_after is not None and 0 < error.retry_after <= 60
    assert isinstance(error, easel.ResourceExhausted)

    waits: List[float] = []

    def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with easel.Client(api_key=key) as patient:
        patient._sleep = recorded_sleep
        # The bucket is empty: within three quick calls one is limited, waits and succeeds.
        for _ in range(3):
            next(patient.list(), None)
    assert waits, "a call was limited and retried"
    assert all(0 < wait <= 60 for wait in waits)


def test_a_token_works_like_the_key(user: Dict[str, str]) -> None:
    target = _core.Settings.resolve(None, None, None, None, None, None).target
    with grpc.insecure_channel(target) as channel:
        account = account_pb2_grpc.AccountServiceStub(channel)
        token = account.ExchangeToken(account_pb2.ExchangeTokenRequest(), metadata=(("x-api-key", user["api_key"]),))
    with easel.Client(token=token.access_token.token) as client:
        job = client.submit("by token", width=64, height=64, steps=QUICK)
        assert client.get(job.id).owner == user["id"]


def test_async_client_follows_50_jobs_at_once() -> None:
    key = new_user("enterprise")["api_key"]

    async def follow(client: easel.AsyncClient, n: int) -> Tuple[str, List[int], int]:
        job = await client.submit(f"crowd {n}", width=64, height=64, steps=1)
        seqs = []
        status = None
        async for event in client.watch(job.id):
            seqs.append(event.seq)
            status = event.status_change.status if event.WhichOneof("kind") == "status_change" else event.snapshot.status
        return job.id, seqs, int(status or 0)

    async def main() -> List[Tuple[str, List[int], int]]:
        async with easel.AsyncClient(api_key=key) as client:
            results = await asyncio.gather(*(follow(client, n) for n in range(50)))
            listed = [job.id async for job in client.list(page_size=7)]
        assert sorted(listed) == sorted(job_id for job_id, _, _ in results)
        return results

    results = asyncio.run(main())
    assert len({job_id for job_id, _, _ in results}) == 50
    for job_id, seqs, status in results:
        assert status == jobs_pb2.JOB_STATUS_SUCCEEDED, job_id
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (job_id, seqs)


def test_async_client_generates_and_raises_the_same_errors(tmp_path: pathlib.Path) -> None:
    key = new_user()["api_key"]

    async def main() -> List[pathlib.Path]:
        async with easel.AsyncClient(api_key=key) as client:
            with pytest.raises(easel.NotFound):
                await client.get("job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b")
            with pytest.raises(easel.InvalidArgument) as raised:
                await client.submit("a cat", height=12)
            assert list(raised.value.fields) == ["spec.text_to_image.height"]
            return await client.generate("an async cat", tmp_path, width=128, height=64, steps=QUICK)

    (path,) = asyncio.run(main())
    assert path.parent == tmp_path
    assert png_size(path.read_bytes()) == (128, 64)


def test_the_package_installs_with_pip(tmp_path: pathlib.Path) -> None:
    # A copy: pip builds in the source tree, and the checkout stays clean.
    package = tmp_path / "easel-client"
    shutil.copytree(
        pathlib.Path(__file__).resolve().parents[1],
        package,
        ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info", "build"),
    )
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(package)],
        check=True,
        cwd=tmp_path,
    )
    assert (target / "easel" / "py.typed").exists()
    assert (target / "easel" / "jobs" / "v1" / "jobs_pb2.pyi").exists()
    probe = subprocess.run(
        [sys.executable, "-c", "import easel, easel.jobs.v1.jobs_pb2_grpc; print(easel.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert probe.stdout.strip() == str(target / "easel" / "__init__.py")
