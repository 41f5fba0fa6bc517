#!/bin/sh
# Add or remove a phigate gateway CA in the Debian/Ubuntu system trust store.
#
#   sudo scripts/ca/debian.sh install   phigate-ca.pem
#   sudo scripts/ca/debian.sh uninstall phigate-ca.pem
#
# Idempotent: installing an installed CA or removing an absent one changes nothing. Each CA is
# stored under its fingerprint, so during a rotation old and new CAs sit side by side.
# For chroots and tests the paths can be moved:
#   PHIGATE_CA_DIR          default /usr/local/share/ca-certificates/phigate
#   UPDATE_CA_CERTIFICATES  default update-ca-certificates (arguments allowed)
set -eu

die() { echo "debian.sh: $*" >&2; exit 2; }

action=${1:-}
cert=${2:-}
dir=${PHIGATE_CA_DIR:-/usr/local/share/ca-certificates/phigate}
update=${UPDATE_CA_CERTIFICATES:-update-ca-certificates}

case $action in install|uninstall) ;; *) die "usage: debian.sh install|uninstall CERT.pem" ;; esac
[ -r "$cert" ] || die "cannot read $cert"
[ "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$cert")" = 1 ] || die "$cert must hold exactly one PEM certificate"
fp=$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f' | cut -c1-16)
target="$dir/phigate-$fp.crt"  # update-ca-certificates only reads *.crt

if [ "$action" = install ]; then
    if [ -f "$target" ]; then
        echo "already installed: $target"
        exit 0
    fi
    mkdir -p "$dir"
    openssl x509 -in "$cert" -out "$target.tmp"  # normalised PEM, nothing but the certificate
    chmod 644 "$target.tmp"
    mv "$target.tmp" "$target"
    $update
    echo "installed: $target"
else
    if [ ! -e "$target" ]; then
        echo "not installed: $target"
        exit 0
    fi
    rm -f "$target"
    rmdir "$dir" 2>/dev/null || true
    $update --fresh  # rebuilds the bundle and the hash links without the removed CA
    echo "removed: $target"
fi
