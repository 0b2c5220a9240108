#!/bin/sh
# List a run's log entries, oldest first: the first page, 10 at most.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/runs/$VM0_RUN_ID/logs?order=asc&limit=10" \
  -H "Authorization: Bearer $VM0_TOKEN"
