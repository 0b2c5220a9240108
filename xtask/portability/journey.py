"""A new user's journey through the Python client that openapi-python-client generates
from openapi/v1.json, against a running reference server (`cargo xtask portability`).

Every call goes through the generated client and must parse: a success into its model,
an error into `Error`. Every raw response, whatever the call, is validated against the
spec by openapi-core. Each problem is printed as a line starting with FINDING; the exit
code is 1 when there is any.
"""

import argparse
import hashlib
import json
import sys
import time

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

args = argparse.ArgumentParser()
args.add_argument("--url", required=True)
args.add_argument("--token", required=True)
args.add_argument("--spec", required=True)
args.add_argument("--client", required=True, help="the folder that holds vm0_public_api_client")
args = args.parse_args()
sys.path.insert(0, args.client)

from vm0_public_api_client import AuthenticatedClient  # noqa: E402
from vm0_public_api_client.api.agents import (  # noqa: E402
    create_agent, delete_agent, get_agent, get_agent_version, list_agent_versions, list_agents, update_agent)
from vm0_public_api_client.api.artifacts import (  # noqa: E402
    create_artifact, delete_artifact, download_artifact, get_artifact, list_artifact_versions, list_artifacts)
from vm0_public_api_client.api.runs import (  # noqa: E402
    cancel_run, create_run, get_run, get_run_metrics, list_run_logs, list_runs, stream_run_events)
from vm0_public_api_client.api.tokens import create_token, get_token, list_tokens, revoke_token  # noqa: E402
from vm0_public_api_client.api.volumes import (  # noqa: E402
    commit_volume_upload, create_volume, delete_volume, download_volume, get_volume, list_volume_versions,
    list_volumes, prepare_volume_upload)
from vm0_public_api_client import models  # noqa: E402

# openapi-core reads JSON and forms itself; a Server-Sent Events body is UTF-8 text, for
# the spec's string schema.
spec = OpenAPI.from_file_path(args.spec, config=Config(
    extra_media_type_deserializers={"text/event-stream": lambda body, **_: body.decode("utf-8")}))
findings = []
calls = 0
last_status = None


def finding(text):
    findings.append(text)
    print(f"FINDING {text}", flush=True)


def validate(response: httpx.Response):
    """The raw response against the spec, for the operation its request names."""
    response.read()
    request = response.request
    url = httpx.URL(str(request.url))
    body = request.content or None
    # The spec's own server address: openapi-core finds operations under its servers.
    mock_request = MockRequest("http://127.0.0.1:8080", request.method.lower(), url.path, args=dict(url.params),
                               headers=dict(request.headers), data=body,
                               content_type=request.headers.get("content-type", "application/json"))
    media = response.headers.get("content-type", "").split(";")[0]
    mock_response = MockResponse(response.content, status_code=response.status_code,
                                 headers=dict(response.headers), content_type=media)
    try:
        spec.validate_response(mock_request, mock_response)
    except Exception as error:  # openapi-core raises one error type per kind of problem
        cause = getattr(error, "__cause__", None)
        finding(f"{request.method} {url.path} -> {response.status_code}: {type(error).__name__}: {error} {cause or ''}")


client = AuthenticatedClient(base_url=args.url, token=args.token, raise_on_unexpected_status=True,
                             httpx_args={"event_hooks": {"response": [validate]}})


def call(label, endpoint, want, **kwargs):
    """One call; its parsed answer, which must be of type `want`."""
    global calls, last_status
    calls += 1
    try:
        response = endpoint.sync_detailed(client=client, **kwargs)
    except Exception as error:
        finding(f"{label}: the client could not read the response: {type(error).__name__}: {error}")
        return None
    last_status = response.status_code
    parsed = response.parsed
    if want is None:
        if response.status_code != 204:
            finding(f"{label}: status {response.status_code}, wanted 204")
        return None
    if not isinstance(parsed, want):
        finding(f"{label}: parsed as {type(parsed).__name__}, wanted {want.__name__} (status {response.status_code})")
        return None
    return parsed


def expect_error(label, endpoint, status, code, **kwargs):
    error = call(label, endpoint, models.Error, **kwargs)
    if error is not None and (last_status != status or error.error.code.value != code):
        finding(f"{label}: {last_status} {error.error.code.value}, wanted {status} {code}")
    return error


# Agents.
config = {"command": ["sh", "-c", 'echo "hello, $VM0_PROMPT"; echo "to stderr" >&2'], "timeoutSeconds": 60}
agent = call("createAgent", create_agent, models.Agent,
             body=models.CreateAgentRequest.from_dict({"name": "journey", "config": config}))
expect_error("createAgent twice", create_agent, 409, "resource_already_exists",
             body=models.CreateAgentRequest.from_dict({"name": "journey", "config": config}))
call("listAgents", list_agents, models.AgentList, limit=10)
call("listAgents by name", list_agents, models.AgentList, name="journey")
call("getAgent", get_agent, models.Agent, id=agent.id)
expect_error("getAgent unknown", get_agent, 404, "resource_not_found", id="ag_unknown")
config["timeoutSeconds"] = 30
updated = call("updateAgent", update_agent, models.Agent, id=agent.id,
               body=models.UpdateAgentRequest.from_dict({"config": config}))
versions = call("listAgentVersions", list_agent_versions, models.AgentVersionList, id=agent.id)
call("getAgentVersion", get_agent_version, models.AgentVersionDetail, id=agent.id,
     version_id=versions.data[0].id)
expect_error("listAgents bad limit", list_agents, 400, "invalid_parameter", limit=0)

# A volume: empty, then one version of one file.
volume = call("createVolume", create_volume, models.Volume,
              body=models.CreateVolumeRequest.from_dict({"name": "notes"}))
empty = call("getVolume without a version", get_volume, models.VolumeDetail, id=volume.id)
if empty is not None and empty.current_version is not None:
    finding(f"getVolume without a version: currentVersion is {empty.current_version!r}, wanted None")
content = b"the notes\n"
digest = hashlib.sha256(content).hexdigest()
prepared = call("prepareVolumeUpload", prepare_volume_upload, models.PrepareUploadResponse, id=volume.id,
                body=models.PrepareUploadRequest.from_dict(
                    {"files": [{"path": "notes.txt", "size": len(content), "hash": digest}], "message": "first"}))
for target in prepared.files:
    put = httpx.put(target.upload_url, content=content)
    if put.status_code >= 300:
        finding(f"upload to {target.upload_url}: status {put.status_code}")
committed = call("commitVolumeUpload", commit_volume_upload, models.VolumeVersion, id=volume.id,
                 body=models.CommitUploadRequest.from_dict({"uploadSessionId": prepared.upload_session_id}))
detail = call("getVolume", get_volume, models.VolumeDetail, id=volume.id)
if detail is not None and not isinstance(detail.current_version, models.VolumeVersion):
    finding(f"getVolume: currentVersion is {detail.current_version!r}, wanted a VolumeVersion")
call("listVolumes", list_volumes, models.VolumeList)
call("listVolumeVersions", list_volume_versions, models.VolumeVersionList, id=volume.id)
download = call("downloadVolume", download_volume, models.DownloadResponse, id=volume.id)
for file in download.files if download else []:
    got = httpx.get(file.download_url).content
    if got != content:
        finding(f"downloadVolume: {file.path} holds {got!r}")
expect_error("downloadVolume unknown version", download_volume, 404, "resource_not_found", id=volume.id,
             version_id="0" * 64)

# An artifact, which a run writes.
artifact = call("createArtifact", create_artifact, models.Artifact,
                body=models.CreateArtifactRequest.from_dict({"name": "outputs"}))
empty = call("getArtifact without a version", get_artifact, models.ArtifactDetail, id=artifact.id)
if empty is not None and empty.current_version is not None:
    finding(f"getArtifact without a version: currentVersion is {empty.current_version!r}, wanted None")
call("listArtifacts", list_artifacts, models.ArtifactList)

# A run, and everything about it.
run = call("createRun", create_run, models.RunDetail,
           body=models.CreateRunRequest.from_dict({"agent": "journey", "prompt": "world", "volumes": {"notes": "latest"},
                                                   "artifactName": "outputs"}))
expect_error("createRun with two targets", create_run, 400, "invalid_parameter",
             body=models.CreateRunRequest.from_dict({"agent": "journey", "agentId": agent.id, "prompt": "x"}))
expect_error("createRun with none", create_run, 400, "missing_parameter",
             body=models.CreateRunRequest.from_dict({"prompt": "x"}))
deadline = time.time() + 60
while run is not None and run.status.value in ("pending", "running") and time.time() < deadline:
    time.sleep(0.2)
    run = call("getRun", get_run, models.RunDetail, id=run.id)
if run is not None and run.status.value != "completed":
    finding(f"the run ended {run.status.value}: {run.error}")
calls += 1
events = stream_run_events.sync_detailed(client=client, id=run.id)
text = events.content.decode()
names = [line[len("event: "):] for line in text.splitlines() if line.startswith("event: ")]
if names[-1:] != ["complete"] or "output" not in names:
    finding(f"streamRunEvents: the events were {names}")
# Each event as the spec's RunEvent branch its name picks, read without loss.
branches = {"status": models.RunStatusEvent, "output": models.RunOutputEvent, "error": models.RunErrorEvent,
            "complete": models.RunCompleteEvent, "heartbeat": models.RunHeartbeatEvent}
for block in filter(None, text.split("\n\n")):
    fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
    try:
        wire = {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
        read = branches[fields["event"]].from_dict(wire).to_dict()
    except Exception as error:
        finding(f"streamRunEvents: {block!r} does not read as its branch: {type(error).__name__}: {error}")
        continue
    if read != wire:
        finding(f"streamRunEvents: {wire} read as {read}")
call("listRunLogs", list_run_logs, models.RunLogList, id=run.id)
call("getRunMetrics", get_run_metrics, models.RunMetrics, id=run.id)
call("listRuns", list_runs, models.RunList, agent_id=agent.id)
expect_error("cancelRun finished", cancel_run, 400, "invalid_state", id=run.id)
written = call("getArtifact after the run", get_artifact, models.ArtifactDetail, id=artifact.id)
if written is not None and not isinstance(written.current_version, models.ArtifactVersion):
    finding(f"getArtifact after the run: currentVersion is {written.current_version!r}, wanted an ArtifactVersion")
call("listArtifactVersions", list_artifact_versions, models.ArtifactVersionList, id=artifact.id)
call("downloadArtifact", download_artifact, models.DownloadResponse, id=artifact.id)
sleeper = call("createAgent sleeper", create_agent, models.Agent,
               body=models.CreateAgentRequest.from_dict({"name": "sleeper", "config": {"command": ["sleep", "30"]}}))
slow = call("createRun to cancel", create_run, models.RunDetail,
            body=models.CreateRunRequest.from_dict({"agentId": sleeper.id, "prompt": "slow"}))
cancelled = call("cancelRun", cancel_run, models.RunDetail, id=slow.id)
if cancelled is not None and cancelled.status.value != "cancelled":
    finding(f"cancelRun: the run is {cancelled.status.value}")

# Tokens.
token = call("createToken", create_token, models.CreatedToken,
             body=models.CreateTokenRequest.from_dict({"name": "journey", "expiresInDays": 1}))
call("listTokens", list_tokens, models.TokenList)
call("getToken", get_token, models.Token, id=token.id)
call("revokeToken", revoke_token, None, id=token.id)
expect_error("revokeToken unknown", revoke_token, 404, "resource_not_found", id="tok_unknown")

# Cleaning up.
call("deleteVolume", delete_volume, None, id=volume.id)
call("deleteArtifact", delete_artifact, None, id=artifact.id)
call("deleteAgent", delete_agent, None, id=agent.id)
expect_error("getAgent deleted", get_agent, 404, "resource_not_found", id=agent.id)

print(f"the Python journey: {calls} calls, {len(findings)} findings")
sys.exit(1 if findings else 0)
