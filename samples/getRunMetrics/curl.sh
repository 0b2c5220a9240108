#!/bin/sh
# Get a run's resource usage: its samples and their summary.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/runs/$VM0_RUN_ID/metrics" \
  -H "Authorization: Bearer $VM0_TOKEN"
