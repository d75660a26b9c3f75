"""Fuzz a running server with schemathesis, from its own OpenAPI document (`/openapi.json`).

Every operation gets generated requests, valid ones (positive) and ones that break the schema
(negative), sent with the key given; each response must pass four checks: no 5xx, a documented
status code, a documented content type, and a body (or each server-sent event) that conforms
to the documented schema. Every request asks for a short deadline (`X-Request-Timeout`), so a
request for thousands of tokens ends in seconds with a documented 408. Runs are reproducible:
the same seed, server and code send the same requests.

    .venv/bin/python scripts/fuzz.py --url http://127.0.0.1:8000 --key ADMIN_KEY --cases 1000

Use an admin key, so that the admin API is fuzzed too: it may delete adapters whose names it
happens to generate, so point it at a server whose adapters you can lose. Exit code 1 if any
check failed; each finding is printed with a curl command that reproduces it.
"""

import argparse
import contextlib
import functools
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
DEADLINE_HEADER = "X-Request-Timeout"
# The routes that reach the engine, where most of the server's logic is: three shares each.
GENERATION = ("POST /v1/chat/completions", "POST /v1/completions")


@dataclass(frozen=True)
class Finding:
    """A check that failed: where, which, and how to send the request again."""

    operation: str
    title: str
    curl: str

    def __str__(self) -> str:
        return f"[{self.operation}] {self.title}\n  {self.curl}"


@dataclass
class FuzzReport:
    """What a run sent and what it found."""

    operations: list[str] = field(default_factory=list)  # every operation of the document
    cases: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)  # first of each kind
    seconds: float = 0.0

    def add_finding(self, finding: Finding) -> None:
        """Keep the first finding of each (operation, title)."""
        self.findings.setdefault((finding.operation, finding.title), finding)


def fuzz(url: str, key: str, cases: int, seed: int = 0, deadline_s: float = 2.0) -> FuzzReport:
    """Send about `cases` generated requests to the server at `url`, spread over its operations
    (one each for those with nothing to vary), and check every response."""
    auth = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=auth, timeout=30)
    operations = [methods[method] for methods in schema.values() for method in methods]
    model = _served_model(url, auth)
    fixed = auth | {DEADLINE_HEADER: f"{deadline_s:g}"}  # the generated cases keep these
    shares = {op.label: _shares(op, fixed) for op in operations}
    fixed_cases = sum(1 for n in shares.values() if n == 0)  # one case each
    per_share = max(2, math.ceil((cases - fixed_cases) / max(1, sum(shares.values()))))
    report = FuzzReport(operations=[op.label for op in operations])
    started = time.perf_counter()
    with requests.Session() as session:
        send = functools.partial(_send, session=session, url=url, report=report)
        for operation in operations:
            budget = max(1, shares[operation.label] * per_share)
            before = report.cases
            if budget > 1:  # half the cases break the schema, where anything can break it
                negative = operation.as_strategy(GenerationMode.NEGATIVE, headers=fixed)
                _run(negative, budget // 2, seed, send)
            positive = operation.as_strategy(GenerationMode.POSITIVE, headers=fixed)
            _run(_with_model(positive, model), budget - (report.cases - before), seed, send)
    report.seconds = time.perf_counter() - started
    return report


def _shares(operation: Any, fixed: dict[str, str]) -> int:
    """The operation's share of the cases; 0 when it has nothing to generate besides the
    headers we fix (it gets one case)."""
    fixed_names = {name.lower() for name in fixed}
    headers = [p for p in operation.headers if p.name.lower() not in fixed_names]
    if not any((operation.path_parameters, operation.query, headers, operation.body)):
        return 0
    return 3 if operation.label in GENERATION else 1


def _served_model(url: str, auth: dict[str, str]) -> str:
    response = requests.get(f"{url}/v1/models", headers=auth, timeout=30)
    response.raise_for_status()
    model: str = response.json()["data"][0]["id"]
    return model


# Fields whose random values their own checks almost always refuse (a random dict is no
# schema the engine can enforce, a random tool_call_id answers no call).
CONSTRAINED = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "structured_outputs",
)


def _with_model(strategy: st.SearchStrategy[Any], model: str) -> st.SearchStrategy[Any]:
    """About half the valid bodies that name a model name the served one, and leave out the
    fields their own checks almost always refuse: a random name only ever meets the 404, and
    the engine, the path that matters most, would go untested."""

    def name_it(drawn: tuple[Any, bool]) -> Any:
        case, served = drawn
        if served and isinstance(case.body, dict) and "model" in case.body:
            body = {k: v for k, v in case.body.items() if k not in CONSTRAINED}
            if isinstance(body.get("messages"), list):
                body["messages"] = [_plain(m) for m in body["messages"]]
            case.body = {**body, "model": model}
        return case

    return st.tuples(strategy, st.sampled_from((True, False))).map(name_it)


def _plain(message: Any) -> Any:
    """A chat message without tool calls and tool results (a user turn instead of a tool's)."""
    if not isinstance(message, dict):
        return message
    plain = {k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id")}
    if plain.get("role") == "tool":
        plain["role"] = "user"
    if plain.get("content") is None:
        plain["content"] = "hi"
    return plain


def _run(
    strategy: st.SearchStrategy[Any], examples: int, seed: int, send: Callable[[Any], None]
) -> None:
    """Draw up to `examples` cases and send each; no shrinking (findings are collected, not
    raised), no example database, no time limits. Nothing is sent when no case can be drawn
    (a string path parameter cannot break its schema)."""

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        send(case)

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()


def _send(case: Any, *, session: requests.Session, url: str, report: FuzzReport) -> None:
    report.cases += 1
    label = case.operation.label
    try:
        response = case.call(base_url=url, session=session, timeout=60)
    except requests.RequestException as exc:  # the server crashed or hung up: a finding
        report.add_finding(Finding(label, f"No response: {exc}", case.as_curl_command()))
        return
    report.statuses[label, response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        curl = case.as_curl_command(headers=dict(response.request.headers))
        for failure in group.exceptions:
            report.add_finding(Finding(label, f"{failure.title}: {failure.message}", curl))


def print_report(report: FuzzReport) -> None:
    """Cases and statuses per operation, then every finding."""
    print(f"{report.cases} cases in {report.seconds:.0f} s")
    operations = sorted({op for op, _ in report.statuses})
    for op in operations:
        counts = {status: n for (o, status), n in sorted(report.statuses.items()) if o == op}
        print(f"  {op:<50} {', '.join(f'{s}: {n}' for s, n in counts.items())}")
    print(f"{len(report.findings)} finding(s)")
    for finding in report.findings.values():
        print(f"\n{finding}")


def main(argv: list[str] | None = None) -> int:
    """The command line: fuzz, print the report, exit 1 on any finding."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--key", required=True, help="API key sent as Bearer (an admin key)")
    parser.add_argument("--cases", type=int, default=1000, help="requests to send (about)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument(
        "--deadline-s", type=float, default=2.0, help="X-Request-Timeout of every request"
    )
    args = parser.parse_args(argv)
    report = fuzz(args.url.rstrip("/"), args.key, args.cases, args.seed, args.deadline_s)
    print_report(report)
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
