#!/bin/sh
# Get a run: its status, outcome, session, checkpoint, volumes and artifact.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 runs get "$VM0_RUN_ID" --json
