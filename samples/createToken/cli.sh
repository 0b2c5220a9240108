#!/bin/sh
# Create an API token named $VM0_TOKEN_NAME that expires in 30 days; its value is shown this once.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
set -eu

vm0 tokens create "$VM0_TOKEN_NAME" --expires-in-days 30 --json
