"""Hooks of `cargo xtask schemathesis`.

An Idempotency-Key names one request: the server answers a key sent again with another
request 422 idempotency_key_reused, as the spec says. Schemathesis draws header values
from a small pool (the parameter's example, the same few strings), so without this hook
unrelated requests share keys and their 422s read as valid requests refused. Each valid
key is replaced by a fresh UUID v4, the way real clients make them; a key that breaks the
parameter's schema is left as drawn, so the negative phases still send it.

The run authenticates with one token. Schemathesis learns token ids from listTokens and
revokes them, that one included, after which every operation it tests answers 401 and
nothing past authentication is tested. So a revocation of that token is sent for an id
that does not exist instead (a 404, which deleteToken documents).

A valid api-version is sent as the spec's own version. An answer to an older one leaves
out what was added since, as the spec says, so the current schema cannot judge it: the
checking proxy of the end-to-end tests (`tests/src/conformance.rs`) judges each against
its own release. And schemathesis 4.32's coverage phase draws a header as the integer 0 in
cases it calls valid: an api-version or If-Match so drawn is sent as a valid one (an
If-Match of a tag no resource has, answered 412). A header drawn to break the schema is
sent as drawn.
"""

import json
import os
import re
import urllib.request
import uuid

import schemathesis
import yaml
from schemathesis.generation import GenerationMode
from schemathesis.core.parameters import ParameterLocation

VALID_KEY = re.compile(r"[ -~]{1,257}")
TAG = r'(W/)?"[!#-~]*"'
VALID_IF_MATCH = re.compile(rf"\*|{TAG}([ \t]*,[ \t]*{TAG})*")
TOKENS_PATH = "/v1/tokens/{id}"


def own_token_ids():
    """The ids of the tokens the server had when the run began: the run's own."""
    request = urllib.request.Request(
        os.environ["VM0_URL"] + "/v1/tokens",
        headers={"Authorization": "Bearer " + os.environ["VM0_TOKEN"]},
    )
    with urllib.request.urlopen(request) as answer:
        return {token["id"] for token in json.load(answer)["data"]}


OWN_TOKEN_IDS = own_token_ids()
with open("openapi/v1.yaml") as spec:
    SPEC_VERSION = yaml.safe_load(spec)["info"]["version"]


def headers_are_valid(case):
    """Whether schemathesis drew this case's headers to fit their schemas."""
    if case.meta is None:
        return False
    if case.meta.generation.mode == GenerationMode.POSITIVE:
        return True
    drawn = case.meta.components.get(ParameterLocation.HEADER)
    return drawn is not None and drawn.mode == GenerationMode.POSITIVE


@schemathesis.hook
def before_call(context, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if name.lower() == "idempotency-key" and isinstance(value, str):
            if VALID_KEY.fullmatch(value):
                headers[name] = str(uuid.uuid4())
        if name.lower() == "api-version" and headers_are_valid(case):
            headers[name] = SPEC_VERSION
        if name.lower() == "if-match" and headers_are_valid(case):
            if not VALID_IF_MATCH.fullmatch(str(value)):
                headers[name] = '"schemathesis"'
    if case.method.upper() == "DELETE" and case.path == TOKENS_PATH:
        if (case.path_parameters or {}).get("id") in OWN_TOKEN_IDS:
            case.path_parameters["id"] = "tok_" + uuid.uuid4().hex[:8]
