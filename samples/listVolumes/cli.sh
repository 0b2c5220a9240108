#!/bin/sh
# List your volumes: the first page, 10 at most.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 volumes list --limit 10 --json
