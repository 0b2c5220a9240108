#!/bin/sh
# Replace an agent's configuration (a new version, now current): its runs now also sleep 30 s, long enough to cancel one.
set -eu

curl -sS --fail-with-body -w '\n' -X PUT "$VM0_API_URL/v1/agents/$VM0_AGENT_ID" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "config": {
    "command": ["sh", "-c", "tee artifact/answer.txt; sleep 30"],
    "timeoutSeconds": 120
  }
}
EOF
