/* The partner's side of a pull done with libsodium called directly from C, in one thread: read a
 * stored envelope (docs/envelope-format.md), check the signed manifest (Ed25519 over the
 * signature context and the manifest, the issuer's and recipient's key ids, the key commitment,
 * the SHA-256 of the ciphertext, computed with OpenSSL's SHA-256, the fastest on this machine),
 * open the sealed stream key, pull and authenticate every chunk, and write the payload to a file,
 * flushed to disk. The yardstick for "raw libsodium throughput" in scripts/bench-pull.
 *
 * With --flush-behind, a second thread flushes the output to disk (fdatasync) every 8 MiB written,
 * as `civitas pull` does, so the final fsync has little left to wait for.
 *
 * Build: cc -O2 -pthread -o pull_raw pull_raw.c -lsodium -lcrypto
 * Usage: pull_raw [--flush-behind] ENVELOPE RECIPIENT.secret ISSUER.pub OUTPUT   (plain secret key files only)
 * Prints {"bytes": N, "seconds": S} on success; exits 1 with a message on any refusal. */

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEALED_KEY_LENGTH (32 + crypto_box_SEALBYTES)
#define CONTEXT "civitas-envelope/1 manifest\n"

static void fail(const char *why) {
    fprintf(stderr, "pull_raw: %s\n", why);
    exit(1);
}

static void read_exactly(int fd, unsigned char *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t got = read(fd, buffer + done, length - done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) fail("truncated envelope");
        done += (size_t)got;
    }
}

static void write_all(int fd, const unsigned char *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t put = write(fd, buffer + done, length - done);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) fail("cannot write the output");
        done += (size_t)put;
    }
}

/* The whole of a small text file (a key file). */
static char *slurp(const char *path) {
    static char text[4096];
    FILE *file = fopen(path, "r");
    if (!file) fail("cannot read a key file");
    size_t length = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[length] = 0;
    char *end = strchr(text, '\n');
    if (end) *end = 0;
    return strdup(text);
}

/* The n-th space-separated field of a line. */
static char *field(char *line, int n) {
    char *copy = strdup(line), *saved = NULL, *token = strtok_r(copy, " ", &saved);
    for (int i = 0; token && i < n; i++) token = strtok_r(NULL, " ", &saved);
    if (!token) fail("malformed key file");
    return token;
}

static void base64(const char *text, unsigned char *out, size_t length) {
    size_t decoded = 0;
    if (sodium_base642bin(out, length, text, strlen(text), NULL, &decoded, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 || decoded != length)
        fail("malformed base64 in a key file");
}

/* The key id: the first 16 bytes of SHA-256("civitas-key-id/1\0" || ed25519 || x25519), in hex. */
static void key_id(const unsigned char ed[32], const unsigned char x[32], char out[33]) {
    unsigned char input[17 + 64], digest[32];
    memcpy(input, "civitas-key-id/1\0", 17);
    memcpy(input + 17, ed, 32);
    memcpy(input + 49, x, 32);
    crypto_hash_sha256(digest, input, sizeof input);
    sodium_bin2hex(out, 33, digest, 16);
}

/* A top-level member of the canonical manifest: the start of its value, or NULL. */
static const char *member(const char *json, size_t length, const char *name) {
    int depth = 0, in_string = 0;
    size_t wanted = strlen(name);
    for (size_t i = 0; i < length; i++) {
        char c = json[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = 0;
            continue;
        }
        if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') depth--;
        else if (c == '"') {
            if (depth == 1 && i + wanted + 2 < length && strncmp(json + i + 1, name, wanted) == 0 && json[i + 1 + wanted] == '"' &&
                json[i + 2 + wanted] == ':')
                return json + i + 3 + wanted;
            in_string = 1;
        }
    }
    return NULL;
}

static void string_member(const char *json, size_t length, const char *name, char *out, size_t capacity) {
    const char *value = member(json, length, name);
    if (!value || *value != '"') fail("the manifest lacks a member");
    const char *end = strchr(value + 1, '"');
    if (!end || (size_t)(end - value - 1) >= capacity) fail("a manifest member is too long");
    memcpy(out, value + 1, (size_t)(end - value - 1));
    out[end - value - 1] = 0;
}

static unsigned long long number_member(const char *json, size_t length, const char *name) {
    const char *value = member(json, length, name);
    if (!value) fail("the manifest lacks a number");
    return strtoull(value, NULL, 10);
}

/* The flushing thread: one fdatasync per request, requests made during a flush merged into the next. */
static pthread_mutex_t flush_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flush_wanted = PTHREAD_COND_INITIALIZER;
static int flush_requested = 0, flush_stopping = 0, flush_failed = 0, flush_fd = -1;

static void *flush_behind(void *unused) {
    (void)unused;
    pthread_mutex_lock(&flush_lock);
    while (1) {
        while (!flush_requested && !flush_stopping) pthread_cond_wait(&flush_wanted, &flush_lock);
        if (!flush_requested) break;
        flush_requested = 0;
        pthread_mutex_unlock(&flush_lock);
        int failed = fdatasync(flush_fd) != 0;
        pthread_mutex_lock(&flush_lock);
        flush_failed |= failed;
    }
    pthread_mutex_unlock(&flush_lock);
    return NULL;
}

int main(int argc, char **argv) {
    int flushing_behind = argc == 6 && strcmp(argv[1], "--flush-behind") == 0;
    if (flushing_behind) argv++, argc--;
    if (argc != 5) fail("usage: pull_raw [--flush-behind] ENVELOPE RECIPIENT.secret ISSUER.pub OUTPUT");
    if (sodium_init() < 0) fail("libsodium does not start");
    struct timespec started, ended;
    clock_gettime(CLOCK_MONOTONIC, &started);

    /* Keys: the recipient's plain secret key file, the issuer's public key file. */
    char *secret_line = slurp(argv[2]), *public_line = slurp(argv[3]);
    if (strcmp(field(secret_line, 0), "civitas-secret-key/1") != 0 || strcmp(field(secret_line, 3), "plain") != 0)
        fail("the recipient's key is not a plain secret key file");
    unsigned char material[64], ed_public[32], ed_secret[64], x_public[32], issuer_ed[32], issuer_x[32];
    base64(field(secret_line, 4), material, 64);
    crypto_sign_seed_keypair(ed_public, ed_secret, material);
    crypto_scalarmult_base(x_public, material + 32);
    char recipient_id[33], issuer_id[33];
    key_id(ed_public, x_public, recipient_id);
    if (strcmp(field(public_line, 0), "civitas-public-key/1") != 0) fail("the issuer's key is not a public key file");
    base64(field(public_line, 3) + strlen("ed25519:"), issuer_ed, 32);
    base64(field(public_line, 4) + strlen("x25519:"), issuer_x, 32);
    key_id(issuer_ed, issuer_x, issuer_id);

    /* Header: magic, manifest length, manifest, signature. */
    int in = open(argv[1], O_RDONLY);
    if (in < 0) fail("cannot read the envelope");
    unsigned char magic[12];
    read_exactly(in, magic, 12);
    if (memcmp(magic, "civenv1\n", 8) != 0) fail("bad magic");
    size_t manifest_length = ((size_t)magic[8] << 24) | ((size_t)magic[9] << 16) | ((size_t)magic[10] << 8) | magic[11];
    if (manifest_length > (1 << 20)) fail("manifest too long");
    size_t signed_length = strlen(CONTEXT) + manifest_length;
    unsigned char *signed_bytes = malloc(signed_length + 1), signature[64];
    memcpy(signed_bytes, CONTEXT, strlen(CONTEXT));
    read_exactly(in, signed_bytes + strlen(CONTEXT), manifest_length);
    signed_bytes[signed_length] = 0;
    read_exactly(in, signature, 64);
    if (crypto_sign_verify_detached(signature, signed_bytes, signed_length, issuer_ed) != 0) fail("bad signature");
    const char *manifest = (const char *)signed_bytes + strlen(CONTEXT);
    char issuer[64], recipient[64], ciphertext_hex[80], commitment_hex[80];
    string_member(manifest, manifest_length, "issuer", issuer, sizeof issuer);
    string_member(manifest, manifest_length, "recipient", recipient, sizeof recipient);
    string_member(manifest, manifest_length, "ciphertext_sha256", ciphertext_hex, sizeof ciphertext_hex);
    string_member(manifest, manifest_length, "key_commitment", commitment_hex, sizeof commitment_hex);
    unsigned long long payload_length = number_member(manifest, manifest_length, "payload_length");
    unsigned long long chunk_size = number_member(manifest, manifest_length, "chunk_size");
    if (strcmp(issuer, issuer_id) != 0) fail("wrong issuer");
    if (strcmp(recipient, recipient_id) != 0) fail("wrong recipient");
    if (chunk_size == 0 || chunk_size > (64u << 20)) fail("bad chunk size");

    /* The sealed key and stream header, their commitment, and the stream key. */
    unsigned char key_and_header[SEALED_KEY_LENGTH + crypto_secretstream_xchacha20poly1305_HEADERBYTES], digest[32], stream_key[32];
    char digest_hex[65];
    read_exactly(in, key_and_header, sizeof key_and_header);
    crypto_hash_sha256(digest, key_and_header, sizeof key_and_header);
    sodium_bin2hex(digest_hex, sizeof digest_hex, digest, 32);
    if (strcmp(digest_hex, commitment_hex) != 0) fail("key commitment mismatch");
    if (crypto_box_seal_open(stream_key, key_and_header, SEALED_KEY_LENGTH, x_public, material + 32) != 0) fail("the sealed key does not open");
    crypto_secretstream_xchacha20poly1305_state state;
    if (crypto_secretstream_xchacha20poly1305_init_pull(&state, key_and_header + SEALED_KEY_LENGTH, stream_key) != 0) fail("bad stream header");

    char associated[512];
    int associated_length = snprintf(associated, sizeof associated, "civitas-envelope/1 issuer=%s recipient=%s payload_length=%llu chunk_size=%llu",
                                     issuer, recipient, payload_length, chunk_size);
    EVP_MD_CTX *hash = EVP_MD_CTX_new();
    EVP_DigestInit_ex(hash, EVP_sha256(), NULL);
    EVP_DigestUpdate(hash, key_and_header, sizeof key_and_header);

    /* Every chunk: read, hash, pull, write. */
    int out = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0) fail("cannot create the output");
    pthread_t flusher;
    flush_fd = out;
    if (flushing_behind && pthread_create(&flusher, NULL, flush_behind, NULL) != 0) fail("cannot start the flushing thread");
    size_t unflushed = 0;
    unsigned char *cipher = malloc(chunk_size + crypto_secretstream_xchacha20poly1305_ABYTES), *plain = malloc(chunk_size);
    unsigned long long remaining = payload_length, chunks = payload_length == 0 ? 1 : (payload_length + chunk_size - 1) / chunk_size;
    for (unsigned long long index = 0; index < chunks; index++) {
        size_t length = remaining < chunk_size ? (size_t)remaining : (size_t)chunk_size;
        size_t cipher_length = length + crypto_secretstream_xchacha20poly1305_ABYTES;
        read_exactly(in, cipher, cipher_length);
        EVP_DigestUpdate(hash, cipher, cipher_length);
        unsigned long long plain_length = 0;
        unsigned char tag = 0;
        if (crypto_secretstream_xchacha20poly1305_pull(&state, plain, &plain_length, &tag, cipher, cipher_length,
                                                       (const unsigned char *)associated, (unsigned long long)associated_length) != 0)
            fail("a chunk failed authentication");
        if ((tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) != (index == chunks - 1)) fail("final tag misplaced");
        write_all(out, plain, (size_t)plain_length);
        remaining -= length;
        unflushed += (size_t)plain_length;
        if (flushing_behind && unflushed >= (8u << 20)) {
            pthread_mutex_lock(&flush_lock);
            flush_requested = 1;
            pthread_cond_signal(&flush_wanted);
            pthread_mutex_unlock(&flush_lock);
            unflushed = 0;
        }
    }
    unsigned char extra;
    if (read(in, &extra, 1) != 0) fail("trailing data");
    unsigned int hash_length = 0;
    EVP_DigestFinal_ex(hash, digest, &hash_length);
    sodium_bin2hex(digest_hex, sizeof digest_hex, digest, 32);
    if (strcmp(digest_hex, ciphertext_hex) != 0) fail("ciphertext hash mismatch");
    if (flushing_behind) {
        pthread_mutex_lock(&flush_lock);
        flush_stopping = 1;
        pthread_cond_signal(&flush_wanted);
        pthread_mutex_unlock(&flush_lock);
        pthread_join(flusher, NULL);
        if (flush_failed) fail("cannot flush the output");
    }
    if (fsync(out) != 0 || close(out) != 0) fail("cannot flush the output");
    close(in);
    clock_gettime(CLOCK_MONOTONIC, &ended);
    printf("{\"bytes\": %llu, \"seconds\": %.3f}\n", payload_length,
           (double)(ended.tv_sec - started.tv_sec) + (double)(ended.tv_nsec - started.tv_nsec) / 1e9);
    return 0;
}
