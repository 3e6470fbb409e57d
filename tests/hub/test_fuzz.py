"""Fuzz every operation of the hub's OpenAPI document (schemathesis, every built-in check: no
5xx, every answer's status, content type, headers and body as the document says), the hub
stays up, and the jobs DB passes its integrity check afterwards.

Jobs may only use a scratch directory (ORBIT_ALLOWED_ROOTS), so generated jobs that run touch
nothing else on the machine.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.config._checks import PositiveDataAcceptanceConfig

from tests.hub.conftest import HubProcess


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    scratch = root / "scratch"
    (scratch / "src").mkdir(parents=True)
    (scratch / "src" / "a.txt").write_text("fuzz")
    hub = HubProcess(root, ORBIT_ALLOWED_ROOTS=str(scratch)).start()
    token = hub.admin_token()
    yield hub, token
    assert hub.proc is not None and hub.proc.poll() is None, "the hub died under fuzzing"
    assert httpx.get(hub.url + "/api/health").status_code == 200
    hub.stop()
    con = sqlite3.connect(hub.data / "jobs.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_no_operation_fails_on_the_server(fuzz_hub: tuple[HubProcess, str]) -> None:
    hub, token = fuzz_hub
    schema = schemathesis.openapi.from_url(hub.url + "/api/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    load_all_checks()
    # A schema-valid request may still be refused by the rules the schema cannot state (a
    # relative path, a weak password, a name taken): those are the 400 and 409 answers each
    # route documents, with a JSON error; anything else (a 5xx, a 422) still fails.
    schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        expected_statuses=["2xx", "400", "401", "403", "404", "409", "429"])
    every_check = [c for c in CHECKS.get_all() if not is_check_class(c)]
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    ops = [r.ok() for r in schema.get_all_operations()]
    # Calls that can end our own session (logout, revoking tokens, demoting or re-keying the
    # admin) go last, so the rest are fuzzed past authentication.
    last = ("/api/auth/logout", "/api/auth/tokens/{token_id}", "/api/users/{user_id}")
    for op in sorted(ops, key=lambda op: op.path in last):
        if op.path.endswith("/events"):
            continue  # endless streams: test_api's SSE test covers them
        operations += 1

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def fuzz(case: Any) -> None:
            resp = case.call(headers=headers, timeout=30)
            statuses[resp.status_code // 100] += 1
            try:
                case.validate_response(resp, checks=every_check, headers=headers)
            except Exception as exc:  # schemathesis' failure group names every check failed
                failures.append(f"{case.method} {case.formatted_path} -> {resp.status_code}: "
                                f"{str(exc)[:600]} (body {case.body!r:.300})")

        fuzz()
    assert operations >= 20
    print("responses by class:", dict(statuses))
    assert statuses[2] >= 50  # the fuzzing got past validation and auth
    assert failures == [], "\n".join(failures[:20])
