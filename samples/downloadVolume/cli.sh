#!/bin/sh
# Get the pre-signed URLs of a volume's current files and save each under $VM0_DOWNLOAD_DIR.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
# With --json it prints {"versionId", "dir", "files": [{"path", "size", "hash"}]}; the folder must be new or empty.
set -eu

vm0 volumes pull "$VM0_VOLUME_ID" "${VM0_DOWNLOAD_DIR:-vm0-download}" --json
