#!/bin/sh
# Get a volume and its current version.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 volumes get "$VM0_VOLUME_ID" --json
