// Upload the file that prepareArtifactUpload declared to its pre-signed URL, then commit the artifact's new version.
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
  const artifactId = env("VM0_ARTIFACT_ID");
  const uploadSessionId = env("VM0_UPLOAD_SESSION_ID");
  const uploadUrl = env("VM0_UPLOAD_URL");

  // 1. The bytes prepareArtifactUpload declared, to the pre-signed URL (no API token).
  const put = await fetch(uploadUrl, {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream" },
    body: Buffer.from("Hello from the VM0 samples!\n"),
  });
  if (!put.ok) {
    console.error(await put.text());
    process.exit(1);
  }

  // 2. The commit: the upload session becomes the artifact's new current version.
  const response = await fetch(`${apiUrl}/v1/artifacts/${artifactId}/commit`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ uploadSessionId }),
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
