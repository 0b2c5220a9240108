#!/bin/sh
# Follow a run's events until it ends, one JSON object per line: {"id", "event", "data"}.
set -eu

# Server-Sent Events: "id:", "event:" and "data:" lines, a blank line after each event.
# Heartbeats only keep the connection open: they are left out. The stream closes after
# the "complete" event. A failed request prints its error body on stderr and exits 1.
id= event= data=
{ curl -sS -N --fail-with-body "$VM0_API_URL/v1/runs/$VM0_RUN_ID/events" \
    -H "Authorization: Bearer $VM0_TOKEN" \
    -H "Accept: text/event-stream" || printf '\ncurl-failed: %s\n' "$?"; } |
while IFS= read -r line; do
  case $line in
    id:*) id=${line#id:}; id=${id# } ;;
    event:*) event=${line#event:}; event=${event# } ;;
    data:*) data=${line#data:}; data=${data# } ;;
    "")
      case $event in
        "" | heartbeat) ;;
        *) printf '{"id":%s,"event":"%s","data":%s}\n' "$id" "$event" "$data" ;;
      esac
      event= ;;
    curl-failed:*) exit 1 ;;
    *) printf '%s\n' "$line" >&2 ;;
  esac
done
