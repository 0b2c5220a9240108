#!/bin/sh
# Upload the file that prepareArtifactUpload declared to its pre-signed URL, then commit the artifact's new version.
set -eu

# 1. The bytes prepareArtifactUpload declared, to the pre-signed URL (no API token).
printf 'Hello from the VM0 samples!\n' |
  curl -sS --fail-with-body -X PUT "$VM0_UPLOAD_URL" \
    -H "Content-Type: application/octet-stream" --data-binary @-

# 2. The commit: the upload session becomes the artifact's new current version.
curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/artifacts/$VM0_ARTIFACT_ID/commit" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{"uploadSessionId": "$VM0_UPLOAD_SESSION_ID"}
EOF
