#!/bin/sh
# Create an agent named $VM0_AGENT_NAME whose runs echo their prompt into the artifact file answer.txt.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 agents create "$VM0_AGENT_NAME" --config - --json <<'EOF'
{"command": ["tee", "artifact/answer.txt"], "timeoutSeconds": 60}
EOF
