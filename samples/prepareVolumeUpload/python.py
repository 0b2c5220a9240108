#!/usr/bin/env python3
# Declare the files of a volume's next version (one file, hello.txt) and get where to upload each.
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
volume_id = os.environ["VM0_VOLUME_ID"]

content = b"Hello from the VM0 samples!\n"
payload = {
    "files": [
        {"path": "hello.txt", "size": len(content), "hash": hashlib.sha256(content).hexdigest()},
    ],
    "message": "Add hello.txt",
}
request = urllib.request.Request(
    f"{api_url}/v1/volumes/{volume_id}/upload",
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

# Next: PUT each file's bytes to its uploadUrl, then commit the uploadSessionId.
print(json.dumps(answer, indent=2))
