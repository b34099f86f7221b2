"""Submits 100 prompts at once, waits for every job and downloads the images, with a
progress bar.

    pip install ./clients/python tqdm
    EASEL_URL=http://127.0.0.1:8080 EASEL_API_KEY=easel_… python examples/batch.py out/

The jobs run concurrently on one AsyncClient connection; each is followed with a watch (which
resumes by itself if the connection drops), and the bar advances as jobs finish. A prompt whose
job fails is reported at the end; the others are still downloaded.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

import easel

try:
    from tqdm import tqdm
except ImportError:  # the bar is optional
    tqdm = None

SUBJECTS = ["a lighthouse", "a fox", "a teapot", "a cathedral", "a sailboat", "a robot", "a forest", "a city", "a cat", "a mountain"]
STYLES = ["at dusk", "in the rain", "as a woodcut", "in watercolour", "under snow", "at noon", "in neon", "as a mosaic", "in fog", "at dawn"]
PROMPTS = [f"{subject} {style}" for subject in SUBJECTS for style in STYLES]  # 100


async def run_one(client: easel.AsyncClient, prompt: str, out: pathlib.Path, done: "asyncio.Queue[str]") -> str:
    job = await client.submit(prompt, width=512, height=512, steps=20)
    job = await client.wait(job.id)
    if job.status != easel.JobStatus.Value("JOB_STATUS_SUCCEEDED"):
        raise easel.JobFailed(job)
    for index, output in enumerate(job.outputs):
        await client.download(output, out / f"{job.id}-{index}.png", job_id=job.id)
    await done.put(prompt)
    return job.id


async def main(out: pathlib.Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    done: asyncio.Queue[str] = asyncio.Queue()
    bar = tqdm(total=len(PROMPTS), unit="image") if tqdm else None
    async with easel.AsyncClient() as client:
        tasks = [asyncio.create_task(run_one(client, prompt, out, done)) for prompt in PROMPTS]

        async def advance() -> None:
            for finished in range(1, len(PROMPTS) + 1):
                await done.get()
                if bar is not None:
                    bar.update(1)
                else:
                    print(f"\r{finished}/{len(PROMPTS)}", end="", flush=True)

        progress = asyncio.create_task(advance())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        progress.cancel()
    if bar is not None:
        bar.close()
    failures = [(prompt, result) for prompt, result in zip(PROMPTS, results) if isinstance(result, BaseException)]
    for prompt, failure in failures:
        print(f"\n{prompt!r}: {failure}", file=sys.stderr)
    print(f"\n{len(PROMPTS) - len(failures)} images in {out}/, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "out"))))
