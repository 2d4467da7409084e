#ifndef CIVITAS_COPENSSL_SHIM_H
#define CIVITAS_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
#endif
