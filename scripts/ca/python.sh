#!/bin/sh
# Make Python clients (openai SDK/httpx, requests, urllib) trust the gateway: install the bundle
# from `phigate ca bundle` and a profile snippet exporting SSL_CERT_FILE and REQUESTS_CA_BUNDLE.
#
#   sudo scripts/ca/python.sh install   phigate-ca-bundle.pem
#   sudo scripts/ca/python.sh uninstall
#
# These variables REPLACE the default roots, which is why the bundle also carries certifi's
# public roots. Re-run install with a newer bundle after a rotation (same path, new content).
# Idempotent. Applies to login shells; services need the same variables in their unit/manifest.
#   PHIGATE_TRUST_DIR   default /etc/phigate
#   PHIGATE_PROFILE     default /etc/profile.d/phigate-python.sh
set -eu

die() { echo "python.sh: $*" >&2; exit 2; }

action=${1:-}
dir=${PHIGATE_TRUST_DIR:-/etc/phigate}
profile=${PHIGATE_PROFILE:-/etc/profile.d/phigate-python.sh}
target="$dir/phigate-ca-bundle.pem"

case $action in
install)
    bundle=${2:-}
    [ -r "$bundle" ] || die "usage: python.sh install BUNDLE.pem"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$bundle" || die "$bundle holds no PEM certificate"
    snippet="export SSL_CERT_FILE=$target
export REQUESTS_CA_BUNDLE=$target"
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
*) die "usage: python.sh install BUNDLE.pem | uninstall" ;;
esac
