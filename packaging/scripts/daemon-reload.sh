#!/bin/sh
# postinst and postrm of romanad and romana-agent: tell a running systemd
# that a unit file changed. Nothing is enabled or started: romanad and the
# agent need their configuration first (docs/install.md). Does nothing
# without systemd, or when dpkg installs into another root (--root,
# DPKG_ROOT set).
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
exit 0
