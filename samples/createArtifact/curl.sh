#!/bin/sh
# Create an empty artifact named $VM0_ARTIFACT_NAME.
set -eu

curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/artifacts" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "name": "$VM0_ARTIFACT_NAME"
}
EOF
