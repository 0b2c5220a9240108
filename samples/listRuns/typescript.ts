// List your runs, newest first: the first page, 10 at most.
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

  const response = await fetch(`${apiUrl}/v1/runs?limit=10`, {
    headers: { Authorization: `Bearer ${token}` },
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
