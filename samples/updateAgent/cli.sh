#!/bin/sh
# Replace an agent's configuration (a new version, now current): its runs now also sleep 30 s, long enough to cancel one.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 agents update "$VM0_AGENT_ID" --config - --json <<'EOF'
{"command": ["sh", "-c", "tee artifact/answer.txt; sleep 30"], "timeoutSeconds": 120}
EOF
