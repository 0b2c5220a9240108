#!/usr/bin/env python3
# Get an artifact and its current version.
import json
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
)
try:
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(json.dumps(answer, indent=2))
