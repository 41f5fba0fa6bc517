"""Run the phigate pipeline in-process, on real sockets: for tests, the demo and benchmarks.

mitmproxy runs on its own event loop in a background thread, so both sync and async clients
(the openai SDK, the Agents SDK) can talk to it from the calling thread. Both listeners bind
127.0.0.1 on free ports: `forward_url` (HTTPS_PROXY) and `reverse_url` (OPENAI_BASE_URL).

mitmproxy's `ctx` is process-global: a second master started in the same process re-points the
first one's addons at its own options (its CA, its upstream). So one embedded gateway runs per
process at a time, and starting a second one while the first runs is an error.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from mitmproxy import hooks
from mitmproxy.options import Options
from mitmproxy.master import Master

from phigate.addons.master import gateway_master
from phigate.addons.settings import REQUIRED_OPTIONS
from phigate.home import Home

GATEWAY_KEY = "sk-phigate-embedded-gateway-key"


class RunningGateway:
    _live: RunningGateway | None = None

    def __init__(self, home: Path, *, upstream: str, upstream_ca: str | None = None,
                 options: dict | None = None, addons: list | None = None,
                 upstream_key: str | None = GATEWAY_KEY) -> None:
        self.home = Home.open(home)
        self.upstream = upstream
        self.upstream_ca = upstream_ca
        self.extra_options = options or {}
        self.addons = addons
        self.upstream_key = upstream_key
        self.master: Master | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.forward_url = self.reverse_url = ""

    @property
    def ca_cert(self) -> Path:
        return self.home.ca_dir / "mitmproxy-ca-cert.pem"

    def __enter__(self) -> RunningGateway:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from phigate.ca import ensure_ca

        if RunningGateway._live is not None:
            raise RuntimeError("another embedded gateway is running in this process "
                               "(mitmproxy's ctx is global); stop it first")
        RunningGateway._live = self
        ensure_ca(self.home)
        self._thread = threading.Thread(target=self._run, name="phigate-embedded-gateway",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError("gateway did not start in 30 s")
        if self._failure:
            self.stop()
            raise self._failure

    def _options(self) -> dict:
        key_file = ""
        if self.upstream_key is not None:
            key_file = str(self.home.root / "upstream.key")
            Path(key_file).write_text(self.upstream_key)
            Path(key_file).chmod(0o600)
        # gc_freeze off: it would freeze the whole test process, fixtures and all.
        opts = dict(REQUIRED_OPTIONS, phigate_home=str(self.home.root), upstream=self.upstream,
                    upstream_key_file=key_file, gc_freeze=False)
        if self.upstream_ca:
            opts["upstream_ca"] = self.upstream_ca
        opts.update(self.extra_options)
        return opts

    def _run(self) -> None:
        async def main() -> None:
            try:
                opts = Options(confdir=str(self.home.ca_dir), mode=[
                    "regular@127.0.0.1:0", "reverse:https://api.openai.com@127.0.0.1:0"])
                self.master = gateway_master(opts, with_termlog=False, with_dumper=False)
                from phigate.addons.gateway import Gateway, pipeline

                if self.addons is None:
                    self.addons = pipeline()
                gateway = Gateway(self.addons)  # as `phigate run` adds it
                self.master.addons.add(gateway)
                # Options of addons that are not loaded (a partial pipeline) are skipped.
                opts.update(**{k: v for k, v in self._options().items() if k in opts})
                # As mitmproxy's script loader does for scripts: our addons see every option once.
                self.master.addons.invoke_addon_sync(gateway, hooks.ConfigureHook(set(opts.keys())))
                self.loop = asyncio.get_running_loop()
                run = asyncio.create_task(self.master.run())
                await self._wait_listening()
            except BaseException as e:  # reported to the test thread
                self._failure = e
                self._ready.set()
                return
            self._ready.set()
            await run

        asyncio.run(main())

    async def _wait_listening(self) -> None:
        server = self.master.addons.get("proxyserver")
        for _ in range(300):
            addrs = {s.mode.type_name: s.listen_addrs for s in server.servers if s.listen_addrs}
            if "regular" in addrs and "reverse" in addrs:
                self.forward_url = "http://127.0.0.1:%d" % addrs["regular"][0][1]
                self.reverse_url = "http://127.0.0.1:%d" % addrs["reverse"][0][1]
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("proxy servers did not start listening")

    def stop(self) -> None:
        if self.master and self.loop and self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.master.shutdown)
            self._thread.join(15)
        if RunningGateway._live is self:
            RunningGateway._live = None

    def call(self, fn, *args):
        """Run `fn(*args)` on the gateway's event loop and wait for its result."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)
