#!/bin/sh
# Delete an agent and all its versions (its runs are kept).
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 agents delete "$VM0_AGENT_ID" --yes --json
