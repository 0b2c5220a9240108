#!/usr/bin/env python3
# Create an empty artifact named $VM0_ARTIFACT_NAME.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
artifact_name = os.environ["VM0_ARTIFACT_NAME"]

payload = {
    "name": artifact_name,
}
request = urllib.request.Request(
    f"{api_url}/v1/artifacts",
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
