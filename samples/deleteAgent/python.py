#!/usr/bin/env python3
# Delete an agent and all its versions (its runs are kept).
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
agent_id = os.environ["VM0_AGENT_ID"]

request = urllib.request.Request(
    f"{api_url}/v1/agents/{agent_id}",
    headers={"Authorization": f"Bearer {token}"},
    method="DELETE",
)
try:
    # The API answers 204 No Content: nothing to print on success.
    urllib.request.urlopen(request).close()
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(f"Deleted agent {agent_id}", file=sys.stderr)
