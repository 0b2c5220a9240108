#!/bin/sh
# Create an empty volume named $VM0_VOLUME_NAME.
set -eu

curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/volumes" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "name": "$VM0_VOLUME_NAME"
}
EOF
