#ifndef CHATROOM_CHIREDIS_SHIM_H
#define CHATROOM_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
