#!/usr/bin/env python3
# Create an empty volume named $VM0_VOLUME_NAME.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
volume_name = os.environ["VM0_VOLUME_NAME"]

payload = {
    "name": volume_name,
}
request = urllib.request.Request(
    f"{api_url}/v1/volumes",
    data=json.dumps(payload).encode(),
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    method="POST",
)
try:
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(json.dumps(answer, indent=2))
