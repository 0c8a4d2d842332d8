#!/usr/bin/env bash
# Builds the release: dist/chatroom, one file that runs on a bare Linux machine of the
# same architecture (glibc 2.36 or later and libstdc++ are all it needs), and
# dist/SHA256SUMS. The Swift runtime and Foundation are linked in (--static-swift-stdlib),
# hiredis and zlib statically (only their .a files are on the linker's first path);
# swift-crypto brings its own BoringSSL, so there is no libcrypto. `dist/chatroom --version`
# names the commit. scripts/release-test.sh proves the file runs in a minimal Debian root.
#
#   scripts/release.sh          (about 6 minutes on 2 cores from a clean clone)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_swift
ensure_build_packages

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit-modified"; fi

scratch=.build-release
static="$scratch/static-libs"
mkdir -p "$static" dist
for library in libhiredis.a libz.a; do
  path=$(gcc -print-file-name="$library")
  [ -f "$path" ] || die "$library is missing (Debian: libhiredis-dev, zlib1g-dev)"
  ln -sf "$path" "$static/$library"
done

say "building chatroom $commit (release, Swift runtime linked in, hiredis and zlib static)"
swift build -c release --product chatroom --static-swift-stdlib --scratch-path "$scratch" \
  -Xlinker -L"$PWD/$static" -Xcc "-DCHATROOM_COMMIT=\"$commit\""
install -m 0755 "$(swift build -c release --scratch-path "$scratch" --show-bin-path)/chatroom" dist/chatroom
strip dist/chatroom

# What it may need at run time: glibc's libraries, libstdc++ and libgcc_s; nothing else.
unexpected=$(ldd dist/chatroom | awk '{print $1}' | grep -Ev '^(linux-vdso\.so|/lib64/ld-linux|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|libstdc\+\+\.so|libgcc_s\.so)' || true)
[ -z "$unexpected" ] || die "dist/chatroom needs libraries a bare machine lacks: $(echo "$unexpected" | tr '\n' ' ')"

(cd dist && sha256sum chatroom > SHA256SUMS)
say "dist/chatroom: $(du -h dist/chatroom | cut -f1), $(dist/chatroom --version)"
say "needs: $(ldd dist/chatroom | awk '{print $1}' | tr '\n' ' ')"
cat dist/SHA256SUMS
