#!/bin/sh
# List a volume's versions, newest first: the first page, 10 at most.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/volumes/$VM0_VOLUME_ID/versions?limit=10" \
  -H "Authorization: Bearer $VM0_TOKEN"
