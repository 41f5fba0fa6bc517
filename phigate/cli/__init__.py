"""The `phigate` command: run the gateway, mint development tokens, and audit what it did."""

import click

from .approvals import approvals_group
from .audit import audit_group
from .ca import ca_group, doctor_command
from .demo import demo_command
from .policy import policy_group
from .flows import flows_group, replay_command
from .run import run_command, web_command
from .sso import sso_group
from .token import init_command, token_group


@click.group()
@click.version_option(package_name="phigate")
def main() -> None:
    """phigate: a HIPAA compliance gateway for OpenAI traffic.

    Run `phigate COMMAND --help` for any command's options.
    """


main.add_command(init_command)
main.add_command(approvals_group)
main.add_command(audit_group)
main.add_command(ca_group)
main.add_command(doctor_command)
main.add_command(demo_command)
main.add_command(flows_group)
main.add_command(replay_command)
main.add_command(sso_group)
main.add_command(policy_group)
main.add_command(run_command)
main.add_command(web_command)
main.add_command(token_group)
