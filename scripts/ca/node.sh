#!/bin/sh
# Make Node.js clients (openai-node, fetch/undici, https) trust the gateway: install the bundle
# from `phigate ca bundle` and a profile snippet exporting NODE_EXTRA_CA_CERTS.
#
#   sudo scripts/ca/node.sh install   phigate-ca-bundle.pem
#   sudo scripts/ca/node.sh uninstall
#
# NODE_EXTRA_CA_CERTS ADDS to Node's built-in roots and is read once, at process start:
# restart Node processes after install, and re-run install with the new bundle after a rotation.
# Idempotent. Applies to login shells; services need the same variables in their unit/manifest.
#   PHIGATE_TRUST_DIR   default /etc/phigate
#   PHIGATE_PROFILE     default /etc/profile.d/phigate-node.sh
set -eu

die() { echo "node.sh: $*" >&2; exit 2; }

action=${1:-}
dir=${PHIGATE_TRUST_DIR:-/etc/phigate}
profile=${PHIGATE_PROFILE:-/etc/profile.d/phigate-node.sh}
target="$dir/phigate-node-ca.pem"

case $action in
install)
    bundle=${2:-}
    [ -r "$bundle" ] || die "usage: node.sh install BUNDLE.pem"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$bundle" || die "$bundle holds no PEM certificate"
    snippet="export NODE_EXTRA_CA_CERTS=$target"
    if cmp -s "$bundle" "$target" && [ "$(cat "$profile" 2>/dev/null)" = "$snippet" ]; then
        echo "already installed: $target"
        exit 0
    fi
    mkdir -p "$dir" "$(dirname "$profile")"
    cp "$bundle" "$target.tmp" && chmod 644 "$target.tmp" && mv "$target.tmp" "$target"
    printf '%s\n' "$snippet" > "$profile"
    echo "installed: $target ($profile)"
    ;;
uninstall)
    if [ ! -e "$target" ] && [ ! -e "$profile" ]; then
        echo "not installed"
        exit 0
    fi
    rm -f "$target" "$profile"
    rmdir "$dir" 2>/dev/null || true
    echo "removed: $target ($profile)"
    ;;
*) die "usage: node.sh install BUNDLE.pem | uninstall" ;;
esac
