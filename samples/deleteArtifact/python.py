#!/usr/bin/env python3
# Delete an artifact and all its versions.
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
artifact_id = os.environ["VM0_ARTIFACT_ID"]

request = urllib.request.Request(
    f"{api_url}/v1/artifacts/{artifact_id}",
    headers={"Authorization": f"Bearer {token}"},
    method="DELETE",
)
try:
    # The API answers 204 No Content: nothing to print on success.
    urllib.request.urlopen(request).close()
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(f"Deleted artifact {artifact_id}", file=sys.stderr)
