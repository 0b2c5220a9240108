#!/bin/sh
# List your runs, newest first: the first page, 10 at most.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/runs?limit=10" \
  -H "Authorization: Bearer $VM0_TOKEN"
