#!/bin/sh
# Revoke an API token: requests made with it fail from now on.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 tokens revoke "$VM0_TOKEN_ID" --yes --json
