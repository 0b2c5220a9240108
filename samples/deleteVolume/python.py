#!/usr/bin/env python3
# Delete a volume and all its versions.
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
volume_id = os.environ["VM0_VOLUME_ID"]

request = urllib.request.Request(
    f"{api_url}/v1/volumes/{volume_id}",
    headers={"Authorization": f"Bearer {token}"},
    method="DELETE",
)
try:
    # The API answers 204 No Content: nothing to print on success.
    urllib.request.urlopen(request).close()
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(f"Deleted volume {volume_id}", file=sys.stderr)
