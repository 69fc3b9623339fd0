#!/usr/bin/env bash
# Install everything egressguard needs on a Debian/Ubuntu host, from the distribution's and
# PyPI's packages only. Idempotent. Run as root (BPF needs it anyway).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (loading eBPF programs needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
# systemd (systemd-analyze) and util-linux (setpriv, unshare) are used by the tests.
apt_pkgs=(python3 python3-venv python3-bpfcc bpftool iproute2 procps systemd util-linux)
# Tests: a real syslog receiver (the tests start their own rsyslogd; gtls for TLS).
apt_pkgs+=(rsyslog rsyslog-gnutls)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

# Kernel headers: BCC compiles the probes at start-up against /lib/modules/$(uname -r)/build.
krel=$(uname -r)
if [ ! -e "/lib/modules/$krel/build/include" ]; then
  if apt-get install -y -q "linux-headers-$krel" 2>/dev/null; then
    echo "install.sh: installed linux-headers-$krel"
  else
    # Custom kernels (like this CI's) have no matching package. Our probes use only stable UAPI
    # context structs and tracepoint formats, so the distribution's generic headers work.
    echo "install.sh: no linux-headers-$krel package; falling back to the distribution's" \
         "linux-headers-amd64 (safe because the probes use only UAPI structs)" >&2
    dpkg -s linux-headers-amd64 >/dev/null 2>&1 || { apt-get update -q; apt-get install -y -q linux-headers-amd64; }
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n 1)
    mkdir -p "/lib/modules/$krel"
    ln -sfn "$hdr" "/lib/modules/$krel/build"
    ln -sfn "${hdr%-amd64}-common" "/lib/modules/$krel/source"
  fi
fi

# Python: a venv on Debian's interpreter, with system site-packages so Debian's `bcc` imports.
# (The PyPI package called "bcc" is unrelated and must never be installed.)
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -c 'import bcc, hyperscan, grpc' || {
  echo "install.sh: the venv cannot import bcc/hyperscan/grpc" >&2; exit 2; }
# gitleaks' default rules, for the importer's tests and bench/detection.py (never bundled).
bash scripts/fetch-gitleaks-config.sh || echo "install.sh: could not fetch gitleaks' default" \
  "config (npm); tests/test_gitleaks_import.py will fail until scripts/fetch-gitleaks-config.sh runs" >&2
echo "install.sh: done"
