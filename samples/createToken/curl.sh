#!/bin/sh
# Create an API token named $VM0_TOKEN_NAME that expires in 30 days; its value is shown this once.
set -eu

curl -sS --fail-with-body -w '\n' -X POST "$VM0_API_URL/v1/tokens" \
  -H "Authorization: Bearer $VM0_TOKEN" \
  -H "Content-Type: application/json" \
  --data-binary @- <<EOF
{
  "name": "$VM0_TOKEN_NAME",
  "expiresInDays": 30
}
EOF
