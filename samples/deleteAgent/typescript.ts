// Delete an agent and all its versions (its runs are kept).
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
    method: "DELETE",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    console.error(await response.text());
    process.exit(1);
  }
  // The API answers 204 No Content: nothing to print on success.
  console.error(`Deleted agent ${agentId}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
