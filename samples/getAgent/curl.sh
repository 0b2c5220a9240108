#!/bin/sh
# Get an agent.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/agents/$VM0_AGENT_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
