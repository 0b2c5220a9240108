#!/bin/sh
# Declare the files of an artifact's next version (one file, hello.txt) and get where to upload each.
set -eu

# The file's bytes are printf 'Hello from the VM0 samples!\n' (28 bytes); its hash is their
# SHA-256 in hex, as `sha256sum` or `shasum -a 256` prints it.
curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/artifacts/$VM0_ARTIFACT_ID/upload" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "files": [
    {
      "path": "hello.txt",
      "size": 28,
      "hash": "729b542a7720456f9d4e5abed686bdba024b3f9129637b85cb5cac7fdd1a9151"
    }
  ],
  "message": "Add hello.txt"
}
EOF
