// Replace an agent's configuration (a new version, now current): its runs now also sleep 30 s, long enough to cancel one.
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
  const agentId = env("VM0_AGENT_ID");

  const response = await fetch(`${apiUrl}/v1/agents/${agentId}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      config: {
        command: ["sh", "-c", "tee artifact/answer.txt; sleep 30"],
        timeoutSeconds: 120,
      },
    }),
  });
  const text = await response.text();
  if (!response.ok) {
    console.error(text);
    process.exit(1);
  }
  console.log(JSON.stringify(JSON.parse(text), null, 2));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
