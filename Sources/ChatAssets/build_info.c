// What the binary was built from: scripts/release.sh passes -DCHATROOM_COMMIT="…".
#include "ChatAssets.h"

#ifndef CHATROOM_COMMIT
#define CHATROOM_COMMIT "unknown"
#endif

const char *chatroom_build_commit(void) {
    return CHATROOM_COMMIT;
}
