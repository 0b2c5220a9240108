#!/bin/sh
# Get an agent.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
# With --json it prints the agent with its current version (and that version's config) under "version".
set -eu

vm0 agents get "$VM0_AGENT_ID" --json
