// Delete a volume and all its versions.
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
  const volumeId = env("VM0_VOLUME_ID");

  const response = await fetch(`${apiUrl}/v1/volumes/${volumeId}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    console.error(await response.text());
    process.exit(1);
  }
  // The API answers 204 No Content: nothing to print on success.
  console.error(`Deleted volume ${volumeId}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
