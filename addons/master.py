"""The mitmproxy master `phigate run` uses: mitmdump's addons less the ones a gateway never uses.

mitmproxy hands every event of every flow to every addon of its chain, twice for lifecycle
events (as itself and as `update`), whether or not the addon has a hook for it: with mitmdump's
~35 addons that dispatch is a good part of the proxy's own CPU per request. The addons left out
here serve interactive use or rewrite and store traffic (map_local/map_remote, modify_body/
modify_headers, server replay, save/HAR dumps, sticky cookies and auth, anticache/
anticomp, blocklist, the mitm.it onboarding page, stdin flow reading). Behind a PHI gateway those
would act outside the pipeline (a body modified after masking, raw flows written to disk), so
leaving them out also leaves their options out: setting one is refused as an unknown option.
`phigate web` keeps mitmweb's full set (it is for inspection). Measured with scripts/bench.py's
repeated-text workload at c=4: 3.4 -> 2.8 ms of gateway CPU per request.
"""

from __future__ import annotations

from mitmproxy import master, options
from mitmproxy.addons import default_addons, dumper, errorcheck

# mitmproxy addon classes `phigate run` does not load (their options do not exist there).
UNUSED = frozenset({
    "AntiCache", "AntiComp", "BlockList", "Browser", "CommandHistory",
    "Comment", "Cut", "Export", "MapLocal", "MapRemote", "ModifyBody", "ModifyHeaders",
    "Onboarding", "Save", "SaveHar", "ServerPlayback", "StickyAuth", "StickyCookie",
    "StripDnsHttpsRecords", "UpstreamAuth",
})


def gateway_master(opts: options.Options, *, with_termlog: bool = True,
                   with_dumper: bool = True) -> master.Master:
    """A master with mitmproxy's core, proxy, TLS, DNS, blocking, proxyauth, script, h2c,
    alt-svc and client-replay addons (what mitmdump loads, less `UNUSED`; `phigate replay`
    drives client replay through the pipeline), its error check and, optionally, its terminal
    log and flow dumper."""
    gateway = master.Master(opts, with_termlog=with_termlog)
    gateway.addons.add(*(a for a in default_addons() if type(a).__name__ not in UNUSED))
    if with_dumper:
        gateway.addons.add(dumper.Dumper())
    gateway.addons.add(errorcheck.ErrorCheck())
    return gateway
