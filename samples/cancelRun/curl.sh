#!/bin/sh
# Cancel a pending or running run.
set -eu

curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/runs/$VM0_RUN_ID/cancel" \
  -H "Authorization: Bearer $VM0_TOKEN"
