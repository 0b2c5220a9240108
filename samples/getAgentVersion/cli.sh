#!/bin/sh
# Get one version of an agent, with the configuration it holds.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
# With --json it prints the agent with that version under "version".
set -eu

vm0 agents get "$VM0_AGENT_ID" --version "$VM0_AGENT_VERSION_ID" --json
