#!/bin/sh
# Get a run's resource usage: its samples and their summary.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 runs metrics "$VM0_RUN_ID" --json
