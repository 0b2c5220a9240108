#!/usr/bin/env python3
# Get the pre-signed URLs of a volume's current files and save each under $VM0_DOWNLOAD_DIR.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
volume_id = os.environ["VM0_VOLUME_ID"]
directory = os.environ.get("VM0_DOWNLOAD_DIR", "vm0-download")

request = urllib.request.Request(
    f"{api_url}/v1/volumes/{volume_id}/download",
    headers={"Authorization": f"Bearer {token}"},
)
try:
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
    for file in answer["files"]:
        # Paths are relative, without "..": the API refuses any other.
        target = os.path.join(directory, file["path"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # The pre-signed URL needs no API token.
        with urllib.request.urlopen(file["downloadUrl"]) as source, open(target, "wb") as out:
            out.write(source.read())
        print(f"saved {target}", file=sys.stderr)
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)

print(json.dumps(answer, indent=2))
