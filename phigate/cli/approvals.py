"""`phigate approvals`: list, show and decide held requests from a shell.

Reading needs only access to the state folder; deciding needs the approver's own token, verified
like the gateway verifies callers (the dev issuer of the home, or `--issuers FILE`), so the
decision is recorded under a verified identity and the store's rules (no self-approval, approver
groups, two-person rule) apply exactly as on the approval page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click

from phigate.approvals import Approval, ApprovalError, SqliteApprovalStore
from phigate.home import Home
from phigate.identity import (
    DevIssuer,
    IdentityError,
    IssuerConfigError,
    TokenVerifier,
    load_issuers,
)

DB_NAME = "approvals.db"

home_option = click.option(
    "--home", envvar="PHIGATE_HOME", type=click.Path(file_okay=False),
    help="State folder. [env: PHIGATE_HOME; default ~/.phigate]",
)  # fmt: skip
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
token_option = click.option(
    "--token", envvar="PHIGATE_TOKEN", required=True,
    help="Your approver token (JWT). [env: PHIGATE_TOKEN, which keeps it out of `ps`]",
)  # fmt: skip
issuers_option = click.option(
    "--issuers", type=click.Path(exists=True, dir_okay=False),
    help="Trusted issuers file (YAML). [default: the home's development issuer]",
)  # fmt: skip


def open_store(home: str | None) -> SqliteApprovalStore:
    return SqliteApprovalStore(Home.open(home).root / DB_NAME)


@click.group("approvals")
def approvals_group() -> None:
    """Requests held for a human decision."""


@approvals_group.command("list")
@home_option
@json_option
@click.option("--all", "everything", is_flag=True, help="Every state, not only pending.")
def list_approvals(home: str | None, as_json: bool, everything: bool) -> None:
    """List pending approvals (newest first)."""
    approvals = _run(home, lambda store: store.list(None if everything else ("pending",), 1000))
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in approvals], indent=2))
        return
    if not approvals:
        click.echo("no approvals" if everything else "no pending approvals")
        return
    now = time.time()
    for a in approvals:
        click.echo(
            f"{a.id}  {a.state:<9}  {_left(a, now):>7}  {a.rule}  {a.requester['sub']}  "
            f"{a.summary['endpoint']}  {a.approvals}/{a.approvals_required}"
        )


@approvals_group.command("show")
@click.argument("approval_id")
@home_option
@json_option
def show(approval_id: str, home: str | None, as_json: bool) -> None:
    """Show one approval, its masked request summary and its decisions."""
    approval = _run(home, lambda store: store.get(approval_id))
    if as_json:
        click.echo(json.dumps(approval.to_dict(), indent=2))
        return
    s = approval.summary
    entities = ", ".join(f"{k} x{v}" for k, v in s["entities"].items()) or "none"
    lines = [
        f"id:          {approval.id}",
        f"state:       {approval.state}",
        f"rule:        {approval.rule}",
        f"requester:   {approval.requester['sub']} ({approval.requester['iss']})",
        f"request id:  {approval.request_id}",
        f"endpoint:    {s['endpoint']}",
        f"model:       {s['model'] or '-'}",
        f"max tokens:  {'-' if s['max_tokens'] is None else s['max_tokens']}",
        f"tools:       {', '.join(s['tools']) or 'none'}",
        f"entities:    {entities}",
        f"approvals:   {approval.approvals} of {approval.approvals_required} "
        f"from {', '.join(approval.approver_groups)}",
        f"time left:   {_left(approval, time.time())}",
    ]
    if s["excerpt"]:
        lines.append(f"excerpt:     {s['excerpt']}")
    for d in approval.decisions:
        lines.append(f"decision:    {d['decision']} by {d['sub']} ({d['iss']}): {d['reason'] or '-'}")
    click.echo("\n".join(lines))


@approvals_group.command("approve")
@click.argument("approval_id")
@token_option
@click.option("--reason", default="", help="Why (recorded with the decision).")
@issuers_option
@home_option
def approve(approval_id: str, token: str, reason: str, issuers: str | None, home: str | None) -> None:
    """Approve a held request."""
    _decide(approval_id, "approve", token, reason, issuers, home)


@approvals_group.command("deny")
@click.argument("approval_id")
@token_option
@click.option("--reason", required=True, help="Why (required; recorded with the decision).")
@issuers_option
@home_option
def deny(approval_id: str, token: str, reason: str, issuers: str | None, home: str | None) -> None:
    """Deny a held request."""
    _decide(approval_id, "deny", token, reason, issuers, home)


def _decide(
    approval_id: str, decision: str, token: str, reason: str, issuers: str | None, home: str | None
) -> None:
    root = Home.open(home)
    try:
        trusted = load_issuers(issuers) if issuers else [DevIssuer(root.issuer_dir).trusted_issuer()]
    except IssuerConfigError as error:
        raise click.ClickException(str(error)) from None
    try:
        approver = TokenVerifier(trusted).verify(token)
    except IdentityError as error:
        raise click.ClickException(f"token refused: {error.code}: {error.message}") from None
    decided = _run(home, lambda store: store.decide(approval_id, approver, decision, reason))
    click.echo(
        f"{decided.id}: {decision} recorded for {approver.sub}; "
        f"state {decided.state} ({decided.approvals} of {decided.approvals_required} approvals)"
    )


def _run(home: str | None, operation: Callable[[SqliteApprovalStore], Any]) -> Any:
    store = open_store(home)
    try:
        return operation(store)
    except ApprovalError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from None
    finally:
        store.close()


def _left(approval: Approval, now: float) -> str:
    if approval.state != "pending":
        return "-"
    seconds = max(0, round(approval.expires_at - now))
    return f"{seconds // 60}m{seconds % 60:02d}s"
