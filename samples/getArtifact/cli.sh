#!/bin/sh
# Get an artifact and its current version.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 artifacts get "$VM0_ARTIFACT_ID" --json
