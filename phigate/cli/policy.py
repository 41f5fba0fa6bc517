"""`phigate policy`: check policy files and explain what they would do to a request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from phigate.policy import (
    PolicyError,
    PolicySet,
    ViewError,
    approval_rules,
    build_view,
    evaluate_phi,
    load_policies,
    refusals,
)

DEFAULT_DIRECTORY = "policies"
# Keys whose string values are protocol structure, not text a caller wrote.
_STRUCTURAL_KEYS = {"model", "role", "type", "id", "call_id", "tool_call_id", "status"}


@click.group("policy")
def policy_group() -> None:
    """Check policy files and explain their decisions."""


def _load(directory: str) -> PolicySet:
    try:
        return load_policies(directory)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        click.echo(f"{len(exc.problems)} problem(s); the gateway would keep its last good policies.", err=True)
        raise SystemExit(1) from None


@policy_group.command()
@click.argument("directory", default=DEFAULT_DIRECTORY, type=click.Path(file_okay=False))
def check(directory: str) -> None:
    """Validate the policy files in DIRECTORY (*.yaml directly in it)."""
    policies = _load(directory)
    sources = {policy.source for policy in policies.policies}
    click.echo(f"OK: {len(policies.policies)} policies in {len(sources)} file(s)")
    for policy in policies.policies:
        click.echo(
            f"  {policy.name}  priority={policy.priority}  groups={','.join(policy.groups)}  "
            f"version={policy.version}  {Path(policy.source).name}"
        )


def _texts(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string a caller wrote in the body, with its field path (guardrails read all)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [text for index, item in enumerate(value) for text in _texts(item, f"{path}[{index}]")]
    if isinstance(value, dict):
        return [
            text
            for key, item in value.items()
            if key not in _STRUCTURAL_KEYS
            for text in _texts(item, f"{path}.{key}" if path else key)
        ]
    return []


def _phi_summary(pairs: tuple[str, ...]) -> dict[str, int]:
    summary = {}
    for pair in pairs:
        entity, _, count = pair.partition("=")
        if not count.isdigit():
            raise click.BadParameter(f"expected TYPE=COUNT, got {pair!r}", param_hint="--phi")
        summary[entity] = int(count)
    return summary


@policy_group.command()
@click.option("--groups", "groups", multiple=True, help="Caller group (repeatable).")
@click.option("--token", envvar="PHIGATE_TOKEN",
              help="A caller's token: verified like the gateway does, its groups used. "
                   "[env: PHIGATE_TOKEN]")
@click.option("--issuers", type=click.Path(exists=True, dir_okay=False),
              help="Trusted issuers file (as the gateway's identity_issuers option).")
@click.option("--home", envvar="PHIGATE_HOME", type=click.Path(file_okay=False),
              help="Home folder holding the development issuer. [env: PHIGATE_HOME]")
@click.option("--detect", "run_detector", is_flag=True,
              help="Run the PHI detector on the request's text instead of --phi counts.")
@click.option("--request", "request_file", type=click.File("rb"), required=True, help="JSON request body ('-' for stdin).")
@click.option("--method", default="POST", show_default=True)
@click.option("--path", "path", default=None,
              help="Request path [default: /v1/chat/completions if the body has messages, else /v1/responses].")
@click.option("--phi", "phi", multiple=True, metavar="TYPE=COUNT",
              help="PHI detection would find COUNT distinct values of TYPE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.argument("directory", default=DEFAULT_DIRECTORY, type=click.Path(file_okay=False))
def explain(groups: tuple[str, ...], token: str | None, issuers: str | None, home: str | None,
            run_detector: bool, request_file, method: str, path: str | None, phi: tuple[str, ...],
            as_json: bool, directory: str) -> None:
    """Which policy applies to a caller and which of its rules fire on a request (nothing is sent).

    Name the caller with --groups, or with --token (verified as the gateway would)."""
    if token:
        groups = tuple(_verified_groups(token, issuers, home))
    if not groups:
        raise click.UsageError("give --groups or --token")
    policies = _load(directory)
    raw = request_file.read()
    try:
        body = json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError:
        raise click.BadParameter("not valid JSON", param_hint="--request") from None
    if path is None:
        path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/responses"
    texts = _texts(body)
    try:
        view = build_view(method, path, body, len(raw), texts)
    except ViewError as exc:
        raise click.BadParameter(str(exc), param_hint="--request") from None
    summary = _detected(texts) if run_detector else _phi_summary(phi)
    result = _explanation(policies, view, summary, groups)
    click.echo(json.dumps(result, indent=2) if as_json else _render(result))


def _verified_groups(token: str, issuers: str | None, home: str | None) -> tuple[str, ...]:
    from phigate.home import Home
    from phigate.identity import DevIssuer, IdentityError, TokenVerifier, load_issuers

    trusted = load_issuers(issuers) if issuers else []
    trusted.append(DevIssuer(Home.open(home).issuer_dir).trusted_issuer())
    try:
        return TokenVerifier(trusted).verify(token).groups
    except IdentityError as e:
        raise click.ClickException(f"token refused: {e.code} ({e.message})") from None


def _detected(texts: list[tuple[str, str]]) -> dict[str, int]:
    """Distinct values per entity type, as the gateway's masking stage counts them."""
    from phigate.detect import Detector, TextField

    findings = Detector.from_config().analyze([TextField(text) for _, text in texts])
    distinct: dict[str, set[str]] = {}
    for (_, text), found in zip(texts, findings):
        for f in found:
            distinct.setdefault(f.entity_type, set()).add(text[f.start:f.end].casefold())
    return {entity: len(values) for entity, values in sorted(distinct.items())}


def _explanation(policies: PolicySet, view, summary: dict[str, int], groups: tuple[str, ...]) -> dict[str, Any]:
    request = {
        "endpoint": view.endpoint, "model": view.model, "stream": view.stream,
        "max_output_tokens": view.max_output_tokens, "tools_declared": list(view.tools_declared),
        "tools_called": list(view.tools_called), "messages": view.message_count,
        "body_bytes": view.body_bytes,
    }
    policy = policies.select(groups)
    if policy is None:
        return {"outcome": "no_policy", "groups": list(groups), "policy": None, "request": request}
    fired = [
        {"rule": d.rule, "code": d.code, "status": d.status, "message": d.message}
        for d in [*refusals(policy, view), evaluate_phi(policy, summary)]
        if not d.allowed
    ]
    held = approval_rules(policy, view, summary, groups)
    outcome = "refuse" if fired else "hold" if held else "allow"
    masking = policy.masking
    return {
        "outcome": outcome,
        "groups": list(groups),
        "policy": {
            "name": policy.name, "priority": policy.priority, "version": policy.version,
            "source": policy.source, "matched_groups": sorted(set(policy.groups) & set(groups)),
        },
        "request": request,
        "refusals": fired,
        "approvals": [
            {"rule": rule.name, "approvals_required": rule.approvals_required, "timeout": rule.timeout,
             "approver_groups": list(policy.approver_groups)}
            for rule in held
        ],
        "masking": {
            direction: {"default": part.default, "entities": dict(part.entities)}
            for direction, part in (("request", masking.request), ("response", masking.response))
        } | {"reidentify": masking.reidentify},
        "upstream_key": policy.upstream_key,
    }


def _render(result: dict[str, Any]) -> str:
    request = result["request"]
    lines = [f"request: {request['endpoint']} model={request['model']} max_output_tokens={request['max_output_tokens']}"]
    if result["policy"] is None:
        lines.append(f"policy: none binds groups {', '.join(result['groups'])} -> 403 (no policy)")
        return "\n".join(lines)
    policy = result["policy"]
    lines.append(
        f"policy: {policy['name']} (priority {policy['priority']}, version {policy['version']}, "
        f"{policy['source']}; via {', '.join(policy['matched_groups'])})"
    )
    for fired in result["refusals"]:
        lines.append(f"refuse: {fired['rule']} -> {fired['status']} {fired['code']}: {fired['message']}")
    for held in result["approvals"]:
        lines.append(
            f"hold: {held['rule']} ({held['approvals_required']} approval(s) from "
            f"{', '.join(held['approver_groups'])} within {held['timeout']} s)"
        )
    masking = result["masking"]
    lines.append(
        f"masking: request {masking['request']['default']}, response {masking['response']['default']}, "
        f"reidentify {str(masking['reidentify']).lower()}"
    )
    lines.append(f"outcome: {result['outcome']}")
    return "\n".join(lines)
