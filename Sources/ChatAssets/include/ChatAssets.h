#ifndef CHATROOM_CHAT_ASSETS_H
#define CHATROOM_CHAT_ASSETS_H

#include <stddef.h>

/// One file of Public/ or Templates/, compiled into the binary.
typedef struct {
    /// Path under the repository root, e.g. "Public/app.js".
    const char *path;
    const unsigned char *bytes;
    size_t length;
} chatroom_asset;

/// Every embedded file; sets *count to how many.
const chatroom_asset *chatroom_assets(size_t *count);

/// The git commit the binary was built from (scripts/release.sh sets it), or "unknown".
const char *chatroom_build_commit(void);

#endif
