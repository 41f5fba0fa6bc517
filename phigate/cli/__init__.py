"""The `phigate` command: run the gateway, mint development tokens, and audit what it did.

Subcommands are imported when used, so `phigate approvals approve …` or `phigate audit verify`
start in a fraction of a second instead of loading mitmproxy and the NLP stack.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" under phigate.cli
COMMANDS = {
    "approvals": "approvals:approvals_group",
    "audit": "audit:audit_group",
    "ca": "ca:ca_group",
    "demo": "demo:demo_command",
    "doctor": "ca:doctor_command",
    "flows": "flows:flows_group",
    "init": "token:init_command",
    "policy": "policy:policy_group",
    "replay": "flows:replay_command",
    "run": "run:run_command",
    "sso": "sso:sso_group",
    "token": "token:token_group",
    "web": "run:web_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(f"phigate.cli.{module}"), attribute)


@click.group(cls=LazyGroup)
@click.version_option(package_name="phigate")
def main() -> None:
    """phigate: a HIPAA compliance gateway for OpenAI traffic.

    Run `phigate COMMAND --help` for any command's options.
    """
