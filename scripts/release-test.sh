#!/usr/bin/env bash
# Proves the release runs on a bare machine: a minimal Debian 12 root (debootstrap
# --variant=minbase: libc, libstdc++ and little else; no Swift, no hiredis, no zlib-dev),
# made once and kept in $CHATROOM_CACHE (default ~/.cache/chatroom), gets dist/chatroom
# copied in; under chroot it must start with --broker memory, serve the page and answer ok
# to a POST /send/. Builds dist/chatroom first unless it exists and is newer than the
# sources (scripts/release.sh). Needs root (chroot). Talks only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ "$(id -u)" = 0 ] || die "scripts/release-test.sh needs root, for chroot"
ensure_packages debootstrap curl

if [ ! -x dist/chatroom ] || [ -n "$(find Sources Public Templates Package.swift -newer dist/chatroom -print -quit)" ]; then
  bash scripts/release.sh
fi

cache=${CHATROOM_CACHE:-$HOME/.cache/chatroom}
root="$cache/debian-bookworm-minbase"
if [ ! -f "$root/.complete" ]; then
  say "making a minimal Debian root in $root (once; it is kept)"
  rm -rf "$root"
  mkdir -p "$cache"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
  touch "$root/.complete"
fi
for library in libhiredis.so.0.14 libswiftCore.so libFoundation.so; do
  if find "$root" -name "$library" -print -quit | grep -q .; then die "the bare root holds $library: it would prove nothing"; fi
done

install -m 0755 dist/chatroom "$root/usr/local/bin/chatroom"
# /proc, as every running system has it (Swift reads a program's arguments there).
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
unmount() { if mountpoint -q "$root/proc"; then umount "$root/proc"; fi; }
port=$(free_port)
log=$(mktemp "${TMPDIR:-/tmp}/chatroom-release.XXXXXX")
say "dist/chatroom in the bare root, on 127.0.0.1:$port"
chroot "$root" /usr/local/bin/chatroom --version || { unmount; die "the release does not run in the bare root"; }
chroot "$root" /usr/local/bin/chatroom --broker memory --hostname 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; unmount' EXIT
for _ in $(seq 1 100); do port_is_free "$port" || break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
port_is_free "$port" && { cat "$log" >&2; die "the release did not start in the bare root"; }

page=$(curl -fsS "http://127.0.0.1:$port/")
grep -q '<form id="composer"' <<<"$page" || die "the page was not served: $(head -c 200 <<<"$page")"
curl -fsS "http://127.0.0.1:$port/app.js" >/dev/null || die "the page's script was not served"
answer=$(curl -fsS -d 'data=hello+from+a+bare+machine&channel=release' "http://127.0.0.1:$port/send/")
[ "$answer" = ok ] || die "POST /send/ answered '$answer', not ok"
history=$(curl -fsS "http://127.0.0.1:$port/history?channel=release")
grep -q 'hello from a bare machine' <<<"$history" || die "the message is not in /history: $history"
kill "$pid"
wait "$pid" 2>/dev/null || true
unmount
trap - EXIT
rm -f "$log"
say "release test passed: dist/chatroom ($(ldd dist/chatroom | awk '{print $1}' | tr '\n' ' ')) runs on bare Debian"
