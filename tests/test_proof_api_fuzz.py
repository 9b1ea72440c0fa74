"""API fuzzing proof: schemathesis generates requests from `/api/openapi.json` of a live gunicorn
server, as an admin and as a user, valid and invalid data alike.  No answer may be a 5xx, and every
status, content type and body must be what the document says.

Bounded for CI: a fixed number of examples per operation and mode, derandomized (same cases every
run), no shrinking.  Failures of every operation are collected and reported together.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from .fake_provider import Reply
from .proof_support import start_proof_server

EXAMPLES_PER_MODE = 15
PROVIDER_STATUSES = (502, 503)  # the LLM provider failed or is not configured: answers, not crashes


@schemathesis.check
def no_server_error(ctx, response, case) -> None:
    """Like schemathesis' not_a_server_error, except a documented 502/503 of a route that calls the
    model (e.g. the fake provider's answer is not a usable skill draft)."""
    status = response.status_code
    documented = case.operation.definition.raw.get("responses", {})
    if status >= 500 and not (status in PROVIDER_STATUSES and str(status) in documented):
        raise AssertionError(f"server error {status}: {response.text[:300]}")


# Not negative_data_rejection: unknown fields and query parameters are ignored by design
# (starpod/api/schemas.py BaseSchema), which schemathesis counts as "invalid data accepted".
CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXCLUDED = {
    # Each valid create spawns a real Starpod server process (tests/test_instances_local.py covers
    # them); dozens of those would swamp a 2-core CI box without proving more about the document.
    ("POST", "/api/instances"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake):
    fake.default = Reply("fuzzed")
    live = start_proof_server(tmp_path_factory, "api-fuzz", env=fake.environ())
    yield live
    live.stop()


@pytest.fixture(scope="module")
def schema(server):
    return schemathesis.openapi.from_url(f"{server.base_url}/api/openapi.json")


def operations(schema):
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) not in EXCLUDED:
            yield operation


def fuzz_operation(operation, mode: GenerationMode, base_url: str, key: str, ledger) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_MODE, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(base_url=base_url, headers={"X-API-Key": key}, checks=CHECKS, timeout=60)
        ledger.capture(f"fuzz {case.method} {case.formatted_path}", response.content)  # streamed: read here
    run()


def restore_general_settings(server, saved: dict) -> None:
    """Put back the provider and model: an admin's fuzzed values (any provider name is allowed,
    settings.md) would make every later chat a documented 503 instead of exercising the run."""
    assert server.request("PUT", "/api/settings/general", server.admin_key, json=saved).status_code == 200


def fuzz_all(server, schema, key: str, ledger) -> list[str]:
    failures = []
    general = server.get("/api/settings/general", server.admin_key).json()
    base_url = server.base_url
    for operation in operations(schema):
        restore_general_settings(server, general)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, mode, base_url, key, ledger)
            except Unsatisfiable:
                pass  # nothing to negate: an operation without parameters or body has no invalid input
            except (AssertionError, FailureGroup) as exc:  # every operation's failures go into one report
                failures.append(f"--- {operation.method.upper()} {operation.path} ({mode.value}): {str(exc)[:2000]}")
    return failures


def test_fuzzing_as_a_user_finds_no_server_error_and_nothing_undocumented(server, schema, secrets_ledger):
    _, created = server.create_user(server.admin_key, label="fuzz user")
    failures = fuzz_all(server, schema, created["key"], secrets_ledger)
    assert not failures, "\n".join(failures)


def test_fuzzing_as_an_admin_finds_no_server_error_and_nothing_undocumented(server, schema, secrets_ledger):
    failures = fuzz_all(server, schema, server.admin_key, secrets_ledger)
    assert not failures, "\n".join(failures)
