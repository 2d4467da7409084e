#ifndef CIVITAS_COPENSSL_SHIM_H
#define CIVITAS_COPENSSL_SHIM_H
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

/* One-shot SHA-256 without an EVP context or an algorithm fetch per call: OpenSSL's SHA-256 (which uses the CPU's
   SHA extensions where present) at no per-call allocation, for many short inputs. */
static inline void civitas_sha256(const void *data, size_t count, unsigned char *digest) {
    SHA256_CTX context;
    SHA256_Init(&context);
    SHA256_Update(&context, data, count);
    SHA256_Final(digest, &context);
}
#endif
