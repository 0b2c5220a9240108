#!/bin/sh
# Delete an artifact and all its versions.
set -eu

# The API answers 204 No Content: nothing to print on success.
curl -sS --fail-with-body -X DELETE "$VM0_API_URL/v1/artifacts/$VM0_ARTIFACT_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
echo "Deleted artifact $VM0_ARTIFACT_ID" >&2
