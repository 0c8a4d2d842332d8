// The system's OpenSSL libcrypto (Debian: libssl-dev): HMAC-SHA256 and a
// constant-time comparison for the server's tokens. Nothing else of OpenSSL is used.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
