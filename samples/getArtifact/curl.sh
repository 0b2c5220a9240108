#!/bin/sh
# Get an artifact and its current version.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/artifacts/$VM0_ARTIFACT_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
