#!/bin/sh
# Revoke an API token: requests made with it fail from now on.
set -eu

# The API answers 204 No Content: nothing to print on success.
curl -sS --fail-with-body -X DELETE "$VM0_API_URL/v1/tokens/$VM0_TOKEN_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
echo "Revoked token $VM0_TOKEN_ID" >&2
