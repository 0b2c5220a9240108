#!/bin/sh
# Create an empty artifact named $VM0_ARTIFACT_NAME.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 artifacts create "$VM0_ARTIFACT_NAME" --json
