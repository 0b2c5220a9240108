#!/usr/bin/env python3
# Create an API token named $VM0_TOKEN_NAME that expires in 30 days; its value is shown this once.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
token_name = os.environ["VM0_TOKEN_NAME"]

payload = {
    "name": token_name,
    "expiresInDays": 30,
}
request = urllib.request.Request(
    f"{api_url}/v1/tokens",
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
