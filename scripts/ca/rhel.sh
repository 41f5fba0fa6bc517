#!/bin/sh
# Add or remove a phigate gateway CA in the RHEL/CentOS/Fedora/Amazon Linux system trust store (p11-kit).
#
#   sudo scripts/ca/rhel.sh install   phigate-ca.pem
#   sudo scripts/ca/rhel.sh uninstall phigate-ca.pem
#
# Idempotent: installing an installed CA or removing an absent one changes nothing. Each CA is
# stored under its fingerprint, so during a rotation old and new CAs sit side by side.
# For chroots and tests the paths can be moved:
#   PHIGATE_CA_DIR          default /etc/pki/ca-trust/source/anchors
#   UPDATE_CA_TRUST         default "update-ca-trust extract"
set -eu

die() { echo "rhel.sh: $*" >&2; exit 2; }

action=${1:-}
cert=${2:-}
dir=${PHIGATE_CA_DIR:-/etc/pki/ca-trust/source/anchors}
update=${UPDATE_CA_TRUST:-update-ca-trust extract}

case $action in install|uninstall) ;; *) die "usage: rhel.sh install|uninstall CERT.pem" ;; esac
[ -r "$cert" ] || die "cannot read $cert"
[ "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$cert")" = 1 ] || die "$cert must hold exactly one PEM certificate"
fp=$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f' | cut -c1-16)
target="$dir/phigate-$fp.crt"  # anchors/ accepts PEM under any name

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
    $update  # regenerates the extracted bundles without it
    echo "removed: $target"
fi
