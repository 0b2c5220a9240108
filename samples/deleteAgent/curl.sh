#!/bin/sh
# Delete an agent and all its versions (its runs are kept).
set -eu

# The API answers 204 No Content: nothing to print on success.
curl -sS --fail-with-body -X DELETE "$VM0_API_URL/v1/agents/$VM0_AGENT_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
echo "Deleted agent $VM0_AGENT_ID" >&2
