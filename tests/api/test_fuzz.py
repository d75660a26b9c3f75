"""Fuzzing: schemathesis sends generated requests to every operation of the production-like
server's own OpenAPI document, with the admin key, and checks each response (scripts/fuzz.py:
no 5xx, documented status, content type and body). A bounded, seeded run; the script does the
long ones."""

from scripts.fuzz import FuzzReport, fuzz
from tests.conftest import ADMIN_KEY, RunningServer

CHAT = "POST /v1/chat/completions"
CASES = 500  # about 10 s on the demo model; scripts/fuzz.py runs the long ones


def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(prod: RunningServer) -> None:
    report = fuzz(prod.url, ADMIN_KEY, cases=CASES, seed=0, deadline_s=2.0)
    assert not report.findings, _findings(report)
    assert report.cases >= 0.9 * CASES, report.cases  # fewer only where a space ran out
    assert {op for op, _ in report.statuses} == set(report.operations)  # every one was fuzzed
    assert report.statuses[CHAT, 200] >= 5, report.statuses  # requests reached the engine


def _findings(report: FuzzReport) -> str:
    return "\n".join(str(finding) for finding in report.findings.values())
