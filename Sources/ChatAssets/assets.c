// The chat page, compiled into the binary so `chatroom` deploys as one file.
//
// Why a C target with #embed rather than SwiftPM resources: `.embedInCode` turns each
// file into a Swift array literal, which compiles very slowly past ~50 KB per file and
// flattens the folder structure; `.copy`/`.process` leave files beside the binary.
// clang's #embed (C23) reads the bytes at compile time at no cost, keeps the paths,
// and the depfile clang writes makes SwiftPM rebuild when a page file changes.
//
// Adding a file to Public/ or Templates/ means adding one ASSET line below;
// AssetCatalogTests fails if a file is missing here.

#pragma clang diagnostic ignored "-Wc23-extensions"

#include "ChatAssets.h"

static const unsigned char public_index_css[] = {
#embed "../../Public/chat.css"
};
static const unsigned char public_app_js[] = {
#embed "../../Public/app.js"
};
static const unsigned char public_composer_js[] = {
#embed "../../Public/composer.js"
};
static const unsigned char public_connection_js[] = {
#embed "../../Public/connection.js"
};
static const unsigned char public_eventstream_js[] = {
#embed "../../Public/eventstream.js"
};
static const unsigned char public_history_js[] = {
#embed "../../Public/history.js"
};
static const unsigned char public_inbox_js[] = {
#embed "../../Public/inbox.js"
};
static const unsigned char public_messages_js[] = {
#embed "../../Public/messages.js"
};
static const unsigned char public_people_js[] = {
#embed "../../Public/people.js"
};
static const unsigned char public_search_js[] = {
#embed "../../Public/search.js"
};
static const unsigned char public_words_js[] = {
#embed "../../Public/words.js"
};
static const unsigned char public_tabs_js[] = {
#embed "../../Public/tabs.js"
};
static const unsigned char public_favicon_svg[] = {
#embed "../../Public/favicon.svg"
};
static const unsigned char templates_index_mustache[] = {
#embed "../../Templates/index.mustache"
};
static const unsigned char templates_status_mustache[] = {
#embed "../../Templates/status.mustache"
};

#define ENTRY(path, array) { path, array, sizeof(array) }

static const chatroom_asset assets[] = {
    ENTRY("Public/chat.css", public_index_css),
    ENTRY("Public/app.js", public_app_js),
    ENTRY("Public/composer.js", public_composer_js),
    ENTRY("Public/connection.js", public_connection_js),
    ENTRY("Public/eventstream.js", public_eventstream_js),
    ENTRY("Public/history.js", public_history_js),
    ENTRY("Public/inbox.js", public_inbox_js),
    ENTRY("Public/messages.js", public_messages_js),
    ENTRY("Public/people.js", public_people_js),
    ENTRY("Public/search.js", public_search_js),
    ENTRY("Public/tabs.js", public_tabs_js),
    ENTRY("Public/words.js", public_words_js),
    ENTRY("Public/favicon.svg", public_favicon_svg),
    ENTRY("Templates/index.mustache", templates_index_mustache),
    ENTRY("Templates/status.mustache", templates_status_mustache),
};

const chatroom_asset *chatroom_assets(size_t *count) {
    *count = sizeof(assets) / sizeof(assets[0]);
    return assets;
}
