// Streams one job's progress to the terminal, then saves the image.
//
//   (cd clients/ts && npm install && npm run build)
//   EASEL_URL=http://127.0.0.1:8080 EASEL_API_KEY=easel_… node examples/stream.mjs "a lighthouse at dusk"
//
// Uses gRPC over HTTP/2 (`transport: "grpc"`); the watch resumes by itself from the last event
// it saw if the connection drops, so a gateway restart mid-job only pauses the output.

import { writeFile } from "node:fs/promises";
import { createEaselClient, JobStatus, eventStatus } from "../clients/ts/dist/index.js";

const prompt = process.argv[2] ?? "a lighthouse at dusk";
const easel = createEaselClient({ transport: "grpc" }); // EASEL_URL, EASEL_API_KEY

const job = await easel.submit(prompt, { width: 768, height: 512 });
console.log(`submitted ${job.id}`);
const watch = easel.watch(job.id);
for await (const event of watch) {
  switch (event.kind.case) {
    case "queuePosition":
      console.log(`queued, position ${event.kind.value.position}`);
      break;
    case "progress": {
      const { percent, nodeClass, step, maxSteps } = event.kind.value;
      process.stdout.write(`\r${percent.toFixed(0).padStart(3)}%  ${nodeClass} ${step}/${maxSteps}   `);
      break;
    }
    case "output":
      console.log(`\nstored ${event.kind.value.artifactId} (${event.kind.value.sizeBytes} bytes)`);
      break;
    default: {
      const status = eventStatus(event);
      if (status !== undefined) console.log(`\n${JobStatus[status]}`);
    }
  }
}
if (watch.reconnects) console.log(`(the stream was resumed ${watch.reconnects} times)`);

const done = await easel.get(job.id);
if (done.status !== JobStatus.SUCCEEDED) {
  console.error(`job ended ${JobStatus[done.status]}: ${done.error?.message ?? ""}`);
  process.exit(1);
}
const file = `${job.id}.png`;
await writeFile(file, await easel.download(done.outputs[0], done.id));
console.log(`saved ${file}`);
