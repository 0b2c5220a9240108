#!/bin/sh
# List a run's log entries, oldest first: the first page, 10 at most.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
# With --json it prints every entry, in an array.
set -eu

vm0 runs logs "$VM0_RUN_ID" --json
