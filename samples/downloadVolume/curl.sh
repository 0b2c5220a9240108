#!/bin/sh
# Get the pre-signed URLs of a volume's current files and save each under $VM0_DOWNLOAD_DIR.
set -eu

dir=${VM0_DOWNLOAD_DIR:-vm0-download}
answer=$(curl -sS --fail-with-body "$VM0_API_URL/v1/volumes/$VM0_VOLUME_ID/download" \
  -H "Authorization: Bearer $VM0_TOKEN") || { printf '%s\n' "$answer" >&2; exit 1; }
printf '%s\n' "$answer"

# Each file of "files" is a flat {...} object: take its "path" and "downloadUrl" (a shell
# without jq; a path with a quote or a backslash in it needs a real JSON parser).
rest=${answer#*'"files":['}
while :; do
  case $rest in *'"downloadUrl":"'*) ;; *) break ;; esac
  file=${rest%%\}*}
  rest=${rest#*\}}
  url=${file#*'"downloadUrl":"'}; url=${url%%'"'*}
  path=${file#*'"path":"'}; path=${path%%'"'*}
  mkdir -p "$dir/$(dirname "$path")"
  # The pre-signed URL needs no API token.
  curl -sS --fail-with-body -o "$dir/$path" "$url"
  echo "saved $dir/$path" >&2
done
