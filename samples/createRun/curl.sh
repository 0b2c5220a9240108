#!/bin/sh
# Start a run of an agent on a prompt, with a volume mounted and an artifact to write; it executes asynchronously.
set -eu

curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/runs" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "agentId": "$VM0_AGENT_ID",
  "prompt": "Say hello",
  "volumes": {
    "$VM0_VOLUME_NAME": "latest"
  },
  "artifactName": "$VM0_ARTIFACT_NAME"
}
EOF
