// Create an agent named $VM0_AGENT_NAME whose runs echo their prompt into the artifact file answer.txt.
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
  const agentName = env("VM0_AGENT_NAME");

  const response = await fetch(`${apiUrl}/v1/agents`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      name: agentName,
      config: {
        command: ["tee", "artifact/answer.txt"],
        timeoutSeconds: 60,
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
