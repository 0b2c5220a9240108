#!/bin/sh
# List your agents: the first page, 10 at most.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/agents?limit=10" \
  -H "Authorization: Bearer $VM0_TOKEN"
