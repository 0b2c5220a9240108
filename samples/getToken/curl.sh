#!/bin/sh
# Get an API token's details (never its value).
set -eu

curl -sS --fail-with-body -w '\n' "$VM0_API_URL/v1/tokens/$VM0_TOKEN_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
