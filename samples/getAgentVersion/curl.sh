#!/bin/sh
# Get one version of an agent, with the configuration it holds.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/agents/$VM0_AGENT_ID/versions/$VM0_AGENT_VERSION_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
