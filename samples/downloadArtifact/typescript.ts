import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

// Get the pre-signed URLs of an artifact's current files and save each under $VM0_DOWNLOAD_DIR.
function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    console.error(`${name} is not set`);
    process.exit(1);
  }
  return value;
}

interface DownloadFile {
  path: string;
  size: number;
  hash: string;
  downloadUrl: string;
}

async function main(): Promise<void> {
  const apiUrl = env("VM0_API_URL");
  const token = env("VM0_TOKEN");
  const artifactId = env("VM0_ARTIFACT_ID");
  const dir = process.env.VM0_DOWNLOAD_DIR || "vm0-download";

  const response = await fetch(`${apiUrl}/v1/artifacts/${artifactId}/download`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const text = await response.text();
  if (!response.ok) {
    console.error(text);
    process.exit(1);
  }
  const answer = JSON.parse(text) as { versionId: string; files: DownloadFile[] };
  for (const file of answer.files) {
    // The pre-signed URL needs no API token.
    const download = await fetch(file.downloadUrl);
    if (!download.ok) {
      console.error(await download.text());
      process.exit(1);
    }
    // Paths are relative, without "..": the API refuses any other.
    const target = join(dir, file.path);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, Buffer.from(await download.arrayBuffer()));
    console.error(`saved ${target}`);
  }
  console.log(JSON.stringify(answer, null, 2));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
