"""Policies: load the policy folder, reload it when files change, keep the last good set.

An invalid edit never takes effect: the previous policies stay active and the problem is logged
(file, line, field) and kept for the health endpoint.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, exceptions

from phigate.policy import PolicyError, PolicyStore

log = logging.getLogger("phigate")


class Policies:
    def __init__(self) -> None:
        self.store: PolicyStore | None = None
        self._watch: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "policy_reload_interval", int, 2,
            "Seconds between checks of the policy folder for edits (0 disables hot reload).",
        )

    def configure(self, updated: set[str]) -> None:
        if "policies" in updated and (self.store is None
                                      or str(self.store.directory) != ctx.options.policies):
            try:
                self.store = PolicyStore(ctx.options.policies)
            except PolicyError as e:
                raise exceptions.OptionsError(f"invalid policies:\n{e}") from None
        if "policy_reload_interval" in updated and ctx.options.policy_reload_interval < 0:
            raise exceptions.OptionsError("policy_reload_interval must be >= 0")

    def running(self) -> None:
        if ctx.options.policy_reload_interval > 0 and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._reload_forever())

    def done(self) -> None:
        if self._watch:
            self._watch.cancel()

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(ctx.options.policy_reload_interval)
            self.reload()

    def reload(self) -> None:
        assert self.store is not None
        result = self.store.reload()
        if result.errors:
            log.warning("policy reload rejected, last good policies stay active:\n%s",
                        result.errors)
        elif result.changed:
            log.info("policies reloaded: %s", ", ".join(p.name for p in self.current().policies))

    def current(self):
        """The active policy set (a method: mitmproxy inspects addon attributes at load)."""
        assert self.store is not None
        return self.store.current
