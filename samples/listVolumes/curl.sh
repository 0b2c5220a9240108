#!/bin/sh
# List your volumes: the first page, 10 at most.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/volumes?limit=10" \
  -H "Authorization: Bearer $VM0_TOKEN"
