// Follow a run's events until it ends, one JSON object per line: {"id", "event", "data"}.
function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    console.error(`${name} is not set`);
    process.exit(1);
  }
  return value;
}

async function main(): Promise<void> {
  const apiUrl = env("VM0_API_URL");
  const token = env("VM0_TOKEN");
  const runId = env("VM0_RUN_ID");

  const response = await fetch(`${apiUrl}/v1/runs/${runId}/events`, {
    headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
  });
  if (!response.ok || response.body === null) {
    console.error(await response.text());
    process.exit(1);
  }
  // Server-Sent Events: "id:", "event:" and "data:" lines, a blank line after each event.
  // Heartbeats only keep the connection open: they are left out. The stream closes after
  // the "complete" event.
  const decoder = new TextDecoder();
  let buffer = "";
  let event: Record<string, string> = {};
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line !== "") {
        const colon = line.indexOf(":");
        event[line.slice(0, colon)] = line.slice(colon + 1).replace(/^ /, "");
        continue;
      }
      if (event.event !== undefined && event.event !== "heartbeat") {
        const data: unknown = JSON.parse(event.data ?? "null");
        console.log(JSON.stringify({ id: Number(event.id), event: event.event, data }));
      }
      event = {};
    }
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
