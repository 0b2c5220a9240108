#!/usr/bin/env python3
# Upload the file that prepareVolumeUpload declared to its pre-signed URL, then commit the volume's new version.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
volume_id = os.environ["VM0_VOLUME_ID"]
upload_session_id = os.environ["VM0_UPLOAD_SESSION_ID"]
upload_url = os.environ["VM0_UPLOAD_URL"]

content = b"Hello from the VM0 samples!\n"  # the bytes prepareVolumeUpload declared
try:
    # 1. The file's bytes, to its pre-signed URL (no API token).
    put = urllib.request.Request(
        upload_url,
        data=content,
        headers={"Content-Type": "application/octet-stream"},
        method="PUT",
    )
    urllib.request.urlopen(put).close()

    # 2. The commit: the upload session becomes the volume's new current version.
    request = urllib.request.Request(
        f"{api_url}/v1/volumes/{volume_id}/commit",
        data=json.dumps({"uploadSessionId": upload_session_id}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(json.dumps(answer, indent=2))
