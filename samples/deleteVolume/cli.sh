#!/bin/sh
# Delete a volume and all its versions.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 volumes delete "$VM0_VOLUME_ID" --yes --json
