#!/bin/sh
# Push a folder holding hello.txt as a volume's new version: `vm0 volumes push` prepares the upload, PUTs each file and commits.
# vm0 reads VM0_API_URL and VM0_TOKEN (or the login of `vm0 auth login`).
# With --json it prints the new version, as commitVolumeUpload answers it.
set -eu

dir=$(mktemp -d)
trap 'rm -r "$dir"' EXIT
printf 'Hello from the VM0 samples!\n' > "$dir/hello.txt"
vm0 volumes push "$dir" --name "$VM0_VOLUME_ID" --message "Add hello.txt" --json
