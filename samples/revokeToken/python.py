#!/usr/bin/env python3
# Revoke an API token: requests made with it fail from now on.
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
token_id = os.environ["VM0_TOKEN_ID"]

request = urllib.request.Request(
    f"{api_url}/v1/tokens/{token_id}",
    headers={"Authorization": f"Bearer {token}"},
    method="DELETE",
)
try:
    # The API answers 204 No Content: nothing to print on success.
    urllib.request.urlopen(request).close()
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(f"Revoked token {token_id}", file=sys.stderr)
