#!/usr/bin/env python3
# Follow a run's events until it ends, one JSON object per line: {"id", "event", "data"}.
import json
import os
import sys
import urllib.error
import urllib.request

api_url = os.environ["VM0_API_URL"]
token = os.environ["VM0_TOKEN"]
run_id = os.environ["VM0_RUN_ID"]

request = urllib.request.Request(
    f"{api_url}/v1/runs/{run_id}/events",
    headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
)
try:
    with urllib.request.urlopen(request) as response:
        # Server-Sent Events: "id:", "event:" and "data:" lines, a blank line after each
        # event. Heartbeats only keep the connection open: they are left out. The stream
        # closes after the "complete" event.
        event = {}
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line:
                field, _, value = line.partition(":")
                event[field] = value.removeprefix(" ")
                continue
            if event.get("event", "heartbeat") != "heartbeat":
                data = json.loads(event["data"])
                print(json.dumps({"id": int(event["id"]), "event": event["event"], "data": data}), flush=True)
            event = {}
except urllib.error.HTTPError as error:
    print(error.read().decode(), file=sys.stderr)
    sys.exit(1)
