#!/bin/sh
# Installs the Debian 12 packages ipchat needs to build, test and benchmark.
# Safe to run again; needs root (or sudo).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
    build-essential cmake g++ pkg-config git ca-certificates \
    libboost1.81-dev libboost-program-options1.81-dev libboost-test1.81-dev \
    libreadline-dev nlohmann-json3-dev libzmq3-dev \
    clang libclang-rt-14-dev clang-format \
    tmux gnuplot-nox procps util-linux python3 ccache \
    libsystemd-dev systemd libsqlitecpp-dev libsqlite3-dev sqlite3 scdoc bash-completion \
    irssi weechat-headless ngircd python3-irc ii nats-server libnats-dev \
    passwd login iproute2 linux-perf
