#!/usr/bin/env python3
# Replace an agent's configuration (a new version, now current): its runs now also sleep 30 s, long enough to cancel one.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
agent_id = os.environ["VM0_AGENT_ID"]

payload = {
    "config": {
        "command": ["sh", "-c", "tee artifact/answer.txt; sleep 30"],
        "timeoutSeconds": 120,
    },
}
request = urllib.request.Request(
    f"{api_url}/v1/agents/{agent_id}",
    data=json.dumps(payload).encode(),
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    method="PUT",
)
try:
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(json.dumps(answer, indent=2))
