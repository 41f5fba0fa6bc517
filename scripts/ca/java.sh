#!/bin/sh
# Add or remove a phigate gateway CA in a Java truststore (keytool).
#
#   scripts/ca/java.sh install   phigate-ca.pem
#   scripts/ca/java.sh uninstall phigate-ca.pem
#
# Idempotent: the CA is stored under the alias phigate-<first 16 hex of its SHA-256>.
#   JAVA_TRUSTSTORE   default $JAVA_HOME/lib/security/cacerts (the JDK's default truststore)
#   JAVA_STOREPASS    default changeit (the JDK's default)
#   KEYTOOL           default keytool
# Java honours the CA's name constraints. An application with its own truststore
# (-Djavax.net.ssl.trustStore=...) needs the CA in that file instead: point JAVA_TRUSTSTORE at it.
set -eu

die() { echo "java.sh: $*" >&2; exit 2; }

action=${1:-}
cert=${2:-}
store=${JAVA_TRUSTSTORE:-${JAVA_HOME:-}/lib/security/cacerts}
pass=${JAVA_STOREPASS:-changeit}
keytool=${KEYTOOL:-keytool}

case $action in install|uninstall) ;; *) die "usage: java.sh install|uninstall CERT.pem" ;; esac
[ -r "$cert" ] || die "cannot read $cert"
[ "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$cert")" = 1 ] || die "$cert must hold exactly one PEM certificate"
fp=$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f' | cut -c1-16)
alias="phigate-$fp"

installed() {
    [ -f "$store" ] && "$keytool" -list -keystore "$store" -storepass "$pass" -alias "$alias" >/dev/null 2>&1
}

if [ "$action" = install ]; then
    if installed; then
        echo "already installed: $alias in $store"
        exit 0
    fi
    "$keytool" -importcert -noprompt -alias "$alias" -file "$cert" \
        -keystore "$store" -storepass "$pass" >/dev/null
    echo "installed: $alias in $store"
else
    if ! installed; then
        echo "not installed: $alias in $store"
        exit 0
    fi
    "$keytool" -delete -alias "$alias" -keystore "$store" -storepass "$pass"
    echo "removed: $alias from $store"
fi
