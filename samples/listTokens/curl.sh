#!/bin/sh
# List your API tokens (never their values): the first page, 10 at most.
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/tokens?limit=10" \
  -H "Authorization: Bearer $VM0_TOKEN"
