#!/usr/bin/env bash
# Installs the system pieces lovt needs on a Debian-like machine without a GPU:
# Mesa's software Vulkan driver (lavapipe) from bookworm-backports, which Dawn
# needs (bookworm's own Mesa is too old for Dawn's Vulkan backend), and
# Chromium for the browser test. Idempotent; safe to run on every CI start.
set -euo pipefail
if ! command -v apt-get >/dev/null; then
  echo "setup-system: not a Debian-like system; install a Vulkan driver (or use a GPU) yourself" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
src=/etc/apt/sources.list.d/bookworm-backports.sources
if grep -q bookworm /etc/os-release 2>/dev/null && [ ! -f "$src" ]; then
  # Same mirror as the configured sources.
  mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | awk '{print $2}')
  mirror=${mirror:-http://deb.debian.org/debian}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" | $SUDO tee "$src" >/dev/null
fi
need=()
dpkg -s mesa-vulkan-drivers 2>/dev/null | grep -q '^Version: 2[4-9]' || need+=(mesa-vulkan-drivers)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  if [ -f "$src" ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  fi
  [ -x /usr/bin/chromium ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "setup-system: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers), chromium $([ -x /usr/bin/chromium ] && echo present || echo missing)"
