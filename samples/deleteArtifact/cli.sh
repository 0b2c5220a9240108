#!/bin/sh
# Delete an artifact and all its versions.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 artifacts delete "$VM0_ARTIFACT_ID" --yes --json
