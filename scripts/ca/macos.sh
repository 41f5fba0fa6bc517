#!/bin/sh
# Add or remove a phigate gateway CA in the macOS System keychain, trusted for TLS servers.
#
#   sudo scripts/ca/macos.sh install   phigate-ca.pem
#   sudo scripts/ca/macos.sh uninstall phigate-ca.pem
#
# Idempotent: the CA is looked up by its SHA-1 hash first. macOS honours the CA's name
# constraints. Python and Node do NOT read the keychain: use python.sh / node.sh as well.
#   PHIGATE_KEYCHAIN  default /Library/Keychains/System.keychain
set -eu

die() { echo "macos.sh: $*" >&2; exit 2; }

action=${1:-}
cert=${2:-}
keychain=${PHIGATE_KEYCHAIN:-/Library/Keychains/System.keychain}

case $action in install|uninstall) ;; *) die "usage: macos.sh install|uninstall CERT.pem" ;; esac
[ -r "$cert" ] || die "cannot read $cert"
[ "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$cert")" = 1 ] || die "$cert must hold exactly one PEM certificate"
sha1=$(openssl x509 -in "$cert" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g' | tr 'a-f' 'A-F')

installed() {
    security find-certificate -a -Z "$keychain" 2>/dev/null | grep -q "SHA-1 hash: $sha1"
}

if [ "$action" = install ]; then
    if installed; then
        echo "already installed: $sha1"
        exit 0
    fi
    security add-trusted-cert -d -r trustRoot -p ssl -k "$keychain" "$cert"
    echo "installed: $sha1"
else
    if ! installed; then
        echo "not installed: $sha1"
        exit 0
    fi
    security remove-trusted-cert -d "$cert" 2>/dev/null || true  # the trust setting, then the cert
    security delete-certificate -Z "$sha1" "$keychain"
    echo "removed: $sha1"
fi
