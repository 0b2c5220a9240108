import { createHash } from "node:crypto";

// Declare the files of a volume's next version (one file, hello.txt) and get where to upload each.
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

  const content = Buffer.from("Hello from the VM0 samples!\n");
  const response = await fetch(`${apiUrl}/v1/volumes/${volumeId}/upload`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      files: [
        {
          path: "hello.txt",
          size: content.length,
          hash: createHash("sha256").update(content).digest("hex"),
        },
      ],
      message: "Add hello.txt",
    }),
  });
  const text = await response.text();
  if (!response.ok) {
    console.error(text);
    process.exit(1);
  }
  // Next: PUT each file's bytes to its uploadUrl, then commit the uploadSessionId.
  console.log(JSON.stringify(JSON.parse(text), null, 2));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
