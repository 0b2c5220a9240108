#!/bin/sh
# Get a volume and its current version.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/volumes/$VM0_VOLUME_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
