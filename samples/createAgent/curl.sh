#!/bin/sh
# Create an agent named $VM0_AGENT_NAME whose runs echo their prompt into the artifact file answer.txt.
set -eu

curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/agents" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "name": "$VM0_AGENT_NAME",
  "config": {
    "command": ["tee", "artifact/answer.txt"],
    "timeoutSeconds": 60
  }
}
EOF
