#!/bin/sh
# Delete a volume and all its versions.
set -eu

# The API answers 204 No Content: nothing to print on success.
curl -sS --fail-with-body -X DELETE "$VM0_API_URL/v1/volumes/$VM0_VOLUME_ID" \
  -H "Authorization: Bearer $VM0_TOKEN"
echo "Deleted volume $VM0_VOLUME_ID" >&2
