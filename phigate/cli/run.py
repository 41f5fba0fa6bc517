"""`phigate run` and `phigate web`: the gateway pipeline inside mitmdump or mitmweb."""

from __future__ import annotations

import os
from pathlib import Path

import click

from phigate.home import Home

OPENAI = "https://api.openai.com"


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return value


def mitmproxy_args(*, listen: str, reverse: str | None, home: Home, policies: str | None,
                   upstream: str | None, upstream_ca: str | None,
                   upstream_key_file: str | None, extra_sets: tuple[str, ...],
                   dumper: bool = True) -> list[str]:
    """The mitmdump/mitmweb command line (options only: the pipeline is added directly)."""
    args = ["--mode", f"regular@{listen}"]
    if reverse:
        args += ["--mode", f"reverse:{OPENAI}@{reverse}"]
    sets = {
        "confdir": str(home.ca_dir),
        # No connection is opened before the pipeline has decided (and routed) a request.
        "connection_strategy": "lazy",
        # Leaves carry only the requested name, so the CA's name constraint holds.
        "upstream_cert": "false",
        "phigate_home": str(home.root),
    }
    if dumper:  # mitmdump's flow dumper (mitmweb has none)
        # The JSON flow line (log_json) is the per-request log; mitmproxy's own line prints
        # URLs with their query strings, which may carry PHI.
        sets["flow_detail"] = "0"
    for name, value in (("policies", policies), ("upstream", upstream),
                        ("upstream_ca", upstream_ca), ("upstream_key_file", upstream_key_file)):
        if value:
            sets[name] = value
    for item in extra_sets:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"--set expects NAME=VALUE, got {item!r}")
        sets[name] = value
    for name, value in sets.items():
        args += ["--set", f"{name}={value}"]
    return args


def gateway_options(fn):
    options = [
        click.option("--listen", default="127.0.0.1:8080", show_default=True,
                     callback=lambda c, p, v: _address(v),
                     help="Forward-proxy address (clients set HTTPS_PROXY to it)."),
        click.option("--reverse", default="127.0.0.1:8081", show_default=True,
                     help="Reverse-proxy address (clients set OPENAI_BASE_URL=http://HOST:PORT/v1); "
                          "'off' disables it."),
        click.option("--home", envvar="PHIGATE_HOME", type=click.Path(file_okay=False),
                     help="State folder (CA, keys, audit database). [env: PHIGATE_HOME; "
                          "default ~/.phigate]"),
        click.option("--policies", type=click.Path(exists=True, file_okay=False),
                     help="Policy folder. [default: the shipped policies/]"),
        click.option("--upstream", help="Where OpenAI traffic goes. [default: https://api.openai.com]"),
        click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False),
                     help="CA file trusted for the upstream."),
        click.option("--upstream-key-file", type=click.Path(exists=True, dir_okay=False),
                     help="File with the gateway's OpenAI key. [default: $OPENAI_API_KEY]"),
        click.option("--set", "extra_sets", multiple=True, metavar="NAME=VALUE",
                     help="Any other mitmproxy or phigate option (repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _prepare(home: str | None, reverse: str, **kwargs) -> list[str]:
    state = Home.open(home)
    from phigate.ca import bundle, ensure_ca
    from phigate.identity import DevIssuer

    ensure_ca(state)
    DevIssuer(state.issuer_dir)
    reverse = None if reverse == "off" else _address(reverse)
    _print_usage(kwargs["listen"], reverse, bundle(state), home)
    return mitmproxy_args(home=state, reverse=reverse, **kwargs)


def _print_usage(listen: str, reverse: str | None, ca_bundle: Path, home: str | None) -> None:
    home_flag = f" --home {home}" if home else ""
    lines = [
        "phigate: how applications use this gateway",
        f"  token:   export OPENAI_API_KEY=$(phigate token mint{home_flag} --sub YOU --group clinicians)",
        f"  forward: export HTTPS_PROXY=http://{listen} SSL_CERT_FILE={ca_bundle}",
    ]
    if reverse:
        lines.append(f"  reverse: export OPENAI_BASE_URL=http://{reverse}/v1")
    click.echo("\n".join(lines), err=True)


def _run_parser():
    """`phigate run` passes mitmproxy only modes and options (mitmdump's own parser names
    options of addons the gateway does not load)."""
    import argparse

    parser = argparse.ArgumentParser(prog="phigate run")
    parser.add_argument("--mode", action="append", dest="mode")
    parser.add_argument("--set", action="append", dest="setoptions", default=[], metavar="option[=value]")
    for flag in ("version", "quiet", "verbose", "options", "commands"):  # what process_options reads
        parser.set_defaults(**{flag: None})
    return parser


def serve(arguments: list[str], *, web: bool = False) -> int:
    """Run mitmdump or mitmweb with the pipeline added as addons, not loaded as a script.

    mitmproxy keeps listening when a script fails to load, and would then forward traffic with
    no stage in the way. Here every addon is registered and every option (command line and
    config.yaml) is validated by the addons' `configure` before a single listener opens; any
    problem exits with status 1 instead.
    """
    import asyncio
    import logging
    import signal

    from mitmproxy import exceptions, hooks, optmanager, options
    from mitmproxy.tools import cmdline
    from mitmproxy.tools.main import process_options

    from phigate.addons.gateway import Gateway, pipeline

    async def main() -> int:
        # As mitmproxy's own entry points: the terminal log filters by its own verbosity option.
        logging.getLogger().setLevel(logging.DEBUG)
        for noisy in ("tornado", "asyncio", "hpack", "quic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        opts = options.Options()
        if web:
            from mitmproxy.tools.web.master import WebMaster

            master, parser = WebMaster(opts), cmdline.mitmweb(opts)
        else:
            from phigate.addons.master import gateway_master

            master, parser = gateway_master(opts), _run_parser()
        gateway = Gateway(pipeline())
        master.addons.add(gateway)
        parsed = parser.parse_args(arguments)
        try:
            opts.set(*parsed.setoptions, defer=True)
            if opts.deferred:
                raise exceptions.OptionsError(f"unknown options: {', '.join(opts.deferred)}")
            optmanager.load_paths(opts, os.path.join(opts.confdir, "config.yaml"),
                                  os.path.join(opts.confdir, "config.yml"))
            process_options(parser, opts, parsed)
            master.addons.invoke_addon_sync(gateway, hooks.ConfigureHook(set(opts.keys())))
        except (exceptions.OptionsError, exceptions.AddonManagerError) as e:
            click.echo(f"phigate: {e}", err=True)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, master.shutdown)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        await master.run()
        return 0

    return asyncio.run(main())


@click.command("run")
@gateway_options
def run_command(home, reverse, **kwargs) -> None:
    """Run the gateway (mitmdump with the phigate pipeline)."""
    raise SystemExit(serve(_prepare(home, reverse, **kwargs)))


@click.command("web")
@gateway_options
@click.option("--web", "web_address", default="127.0.0.1:8090", show_default=True,
              help="mitmweb's interface for live inspection.")
def web_command(home, reverse, web_address, **kwargs) -> None:
    """Run the gateway inside mitmweb, for live inspection of flows."""
    host, _, port = _address(web_address).rpartition(":")
    args = _prepare(home, reverse, dumper=False, **kwargs)
    raise SystemExit(serve(args + ["--set", f"web_host={host}", "--set", f"web_port={port}",
                                   "--set", "web_open_browser=false"], web=True))
