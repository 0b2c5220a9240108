#!/bin/sh
# Create an empty volume named $VM0_VOLUME_NAME.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 volumes create "$VM0_VOLUME_NAME" --json
