#!/bin/sh
# Cancel a pending or running run.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 runs cancel "$VM0_RUN_ID" --json
