#!/bin/sh
# Upload the file that prepareVolumeUpload declared to its pre-signed URL, then commit the volume's new version.
set -eu

# 1. The bytes prepareVolumeUpload declared, to the pre-signed URL (no API token).
printf 'Hello from the VM0 samples!\n' |
  curl -sS --fail-with-body -X PUT "$VM0_UPLOAD_URL" \
    -H "Content-Type: application/octet-stream" --data-binary @-

# 2. The commit: the upload session becomes the volume's new current version.
curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/volumes/$VM0_VOLUME_ID/commit" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{"uploadSessionId": "$VM0_UPLOAD_SESSION_ID"}
EOF
