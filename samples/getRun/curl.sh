#!/bin/sh
# Get a run: its status, outcome, session, checkpoint, volumes and artifact.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/runs/$VM0_RUN_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
