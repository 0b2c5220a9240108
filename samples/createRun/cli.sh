#!/bin/sh
# Start a run of an agent on a prompt, with a volume mounted and an artifact to write; it executes asynchronously.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
# With --json it --detach returns at once with the run, as the API answered it.
set -eu

vm0 run "$VM0_AGENT_ID" "Say hello" --volume "$VM0_VOLUME_NAME" --artifact "$VM0_ARTIFACT_NAME" \
  --detach --json
