#!/usr/bin/env python3
# Start a run of an agent on a prompt, with a volume mounted and an artifact to write; it executes asynchronously.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
agent_id = os.environ["VM0_AGENT_ID"]
volume_name = os.environ["VM0_VOLUME_NAME"]
artifact_name = os.environ["VM0_ARTIFACT_NAME"]

payload = {
    "agentId": agent_id,
    "prompt": "Say hello",
    "volumes": {
        volume_name: "latest",
    },
    "artifactName": artifact_name,
}
request = urllib.request.Request(
    f"{api_url}/v1/runs",
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
