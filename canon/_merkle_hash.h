/* Portable C hashing for n3xus.canon._merkle_c (included by _merkle_c.pyx).

   BLAKE3 (hash mode, 32-byte output) written from the BLAKE3 specification and SHA-256
   from FIPS 180-4, plus RFC 9162 interior-node hashing H(0x01 || left || right), one node
   at a time or a whole tree level at once across SIMD lanes. Tested against the blake3
   package and hashlib (tests/test_canon_merkle.py). Everything is static: this header is
   compiled into the extension's single translation unit. */
#ifndef N3X_MERKLE_HASH_H
#define N3X_MERKLE_HASH_H

#include <stdint.h>
#include <string.h>

/* Multi-lane hashing of many independent nodes uses GCC/Clang vector extensions: SSE2
   (4 lanes) on every x86-64, AVX2/AVX-512 when the CPU has them, scalar C elsewhere. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(N3X_SCALAR_ONLY)
#define N3X_VECTORS 1
typedef uint32_t n3x_v4 __attribute__((vector_size(16)));
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define N3X_X86_WIDE 1
typedef uint32_t n3x_v8 __attribute__((vector_size(32)));
typedef uint32_t n3x_v16 __attribute__((vector_size(64)));
#endif
#endif

#define N3X_ROT(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t n3x_load32_le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline void n3x_store32_le(uint8_t *p, uint32_t w) {
    p[0] = (uint8_t)w; p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16); p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t n3x_load32_be(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
           (uint32_t)p[3];
}

static inline void n3x_store32_be(uint8_t *p, uint32_t w) {
    p[0] = (uint8_t)(w >> 24); p[1] = (uint8_t)(w >> 16);
    p[2] = (uint8_t)(w >> 8); p[3] = (uint8_t)w;
}

/* ---- BLAKE3 (hash mode, 32-byte output), from the BLAKE3 specification ---- */
#define N3X_B3_CHUNK_START 1u
#define N3X_B3_CHUNK_END 2u
#define N3X_B3_PARENT 4u
#define N3X_B3_ROOT 8u
#define N3X_B3_BLOCK_LEN 64u
#define N3X_B3_CHUNK_LEN 1024u
#define N3X_B3_MAX_DEPTH 64

static const uint32_t n3x_b3_iv[8] = {
    0x6a09e667UL, 0xbb67ae85UL, 0x3c6ef372UL, 0xa54ff53aUL,
    0x510e527fUL, 0x9b05688cUL, 0x1f83d9abUL, 0x5be0cd19UL};

/* Round r reads message word n3x_b3_schedule[r][i] where round 0 reads word i; each
   row is the previous one put through the spec's permutation
   2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8. */
static const uint8_t n3x_b3_schedule[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13}};

/* The quarter-round G and the rounds, for scalars (uint32_t) and vectors of lanes alike;
   r and the word positions are constants at every use, so the schedule lookups fold. */
#define N3X_B3_G(v, a, b, c, d, x, y) do {                       \
    v[a] = v[a] + v[b] + (x); v[d] = N3X_ROT(v[d] ^ v[a], 16); \
    v[c] = v[c] + v[d];       v[b] = N3X_ROT(v[b] ^ v[c], 12); \
    v[a] = v[a] + v[b] + (y); v[d] = N3X_ROT(v[d] ^ v[a], 8);  \
    v[c] = v[c] + v[d];       v[b] = N3X_ROT(v[b] ^ v[c], 7);  \
} while (0)

#define N3X_B3_ROUND(v, m, r) do {                                                       \
    const uint8_t *s_ = n3x_b3_schedule[r];                                              \
    N3X_B3_G(v, 0, 4, 8, 12, m[s_[0]], m[s_[1]]);                                        \
    N3X_B3_G(v, 1, 5, 9, 13, m[s_[2]], m[s_[3]]);                                        \
    N3X_B3_G(v, 2, 6, 10, 14, m[s_[4]], m[s_[5]]);                                       \
    N3X_B3_G(v, 3, 7, 11, 15, m[s_[6]], m[s_[7]]);                                       \
    N3X_B3_G(v, 0, 5, 10, 15, m[s_[8]], m[s_[9]]);                                       \
    N3X_B3_G(v, 1, 6, 11, 12, m[s_[10]], m[s_[11]]);                                     \
    N3X_B3_G(v, 2, 7, 8, 13, m[s_[12]], m[s_[13]]);                                      \
    N3X_B3_G(v, 3, 4, 9, 14, m[s_[14]], m[s_[15]]);                                      \
} while (0)

#define N3X_B3_ROUNDS(v, m) do {                                                         \
    N3X_B3_ROUND(v, m, 0); N3X_B3_ROUND(v, m, 1); N3X_B3_ROUND(v, m, 2);                \
    N3X_B3_ROUND(v, m, 3); N3X_B3_ROUND(v, m, 4); N3X_B3_ROUND(v, m, 5);                \
    N3X_B3_ROUND(v, m, 6);                                                               \
} while (0)

/* The compression function, truncated to the 8-word chaining value. */
static void n3x_b3_compress(uint32_t cv[8], const uint8_t block[64],
                            uint32_t block_len, uint64_t counter, uint32_t flags) {
    uint32_t m[16], v[16];
    int i;
    for (i = 0; i < 16; i++) m[i] = n3x_load32_le(block + 4 * i);
    for (i = 0; i < 8; i++) v[i] = cv[i];
    v[8] = n3x_b3_iv[0]; v[9] = n3x_b3_iv[1]; v[10] = n3x_b3_iv[2]; v[11] = n3x_b3_iv[3];
    v[12] = (uint32_t)counter; v[13] = (uint32_t)(counter >> 32);
    v[14] = block_len; v[15] = flags;
    N3X_B3_ROUNDS(v, m);
    for (i = 0; i < 8; i++) cv[i] = v[i] ^ v[i + 8];
}

/* Chaining value of one chunk (at most 1024 bytes, chunk number `counter`). */
static void n3x_b3_chunk(const uint8_t *in, size_t len, uint64_t counter,
                         uint32_t root_flag, uint32_t cv[8]) {
    size_t nblocks = len == 0 ? 1 : (len + N3X_B3_BLOCK_LEN - 1) / N3X_B3_BLOCK_LEN;
    size_t b;
    memcpy(cv, n3x_b3_iv, sizeof n3x_b3_iv);
    for (b = 0; b < nblocks; b++) {
        uint8_t padded[N3X_B3_BLOCK_LEN];
        const uint8_t *src;
        size_t off = b * N3X_B3_BLOCK_LEN;
        size_t blen = len - off > N3X_B3_BLOCK_LEN ? N3X_B3_BLOCK_LEN : len - off;
        uint32_t flags = 0;
        if (blen == N3X_B3_BLOCK_LEN) {
            src = in + off;
        } else {
            memset(padded, 0, sizeof padded);
            if (blen) memcpy(padded, in + off, blen);
            src = padded;
        }
        if (b == 0) flags |= N3X_B3_CHUNK_START;
        if (b == nblocks - 1) flags |= N3X_B3_CHUNK_END | root_flag;
        n3x_b3_compress(cv, src, (uint32_t)blen, counter, flags);
    }
}

static void n3x_b3_parent(const uint32_t left[8], const uint32_t right[8],
                          uint32_t root_flag, uint32_t out[8]) {
    uint8_t block[N3X_B3_BLOCK_LEN];
    uint32_t cv[8];
    int i;
    for (i = 0; i < 8; i++) {
        n3x_store32_le(block + 4 * i, left[i]);
        n3x_store32_le(block + 32 + 4 * i, right[i]);
    }
    memcpy(cv, n3x_b3_iv, sizeof n3x_b3_iv);
    n3x_b3_compress(cv, block, N3X_B3_BLOCK_LEN, 0, N3X_B3_PARENT | root_flag);
    memcpy(out, cv, sizeof cv);
}

static void n3x_blake3(const uint8_t *in, size_t len, uint8_t out[32]) {
    uint32_t cv[8];
    uint32_t stack[N3X_B3_MAX_DEPTH][8];
    size_t depth = 0, done = 0;
    uint64_t chunks = 0;
    int i;
    /* Every chunk but the last is merged into the stack as soon as it is known not to
       be the last, merging one parent per trailing zero bit of the chunk count. */
    while (len - done > N3X_B3_CHUNK_LEN) {
        uint64_t total;
        n3x_b3_chunk(in + done, N3X_B3_CHUNK_LEN, chunks, 0, cv);
        done += N3X_B3_CHUNK_LEN;
        chunks++;
        for (total = chunks; (total & 1) == 0; total >>= 1) {
            depth--;
            n3x_b3_parent(stack[depth], cv, 0, cv);
        }
        memcpy(stack[depth++], cv, sizeof cv);
    }
    n3x_b3_chunk(in + done, len - done, chunks, depth == 0 ? N3X_B3_ROOT : 0, cv);
    while (depth > 0) {
        depth--;
        n3x_b3_parent(stack[depth], cv, depth == 0 ? N3X_B3_ROOT : 0, cv);
    }
    for (i = 0; i < 8; i++) n3x_store32_le(out + 4 * i, cv[i]);
}

/* ---- SHA-256, from FIPS 180-4 ---- */
static const uint32_t n3x_sha256_iv[8] = {
    0x6a09e667UL, 0xbb67ae85UL, 0x3c6ef372UL, 0xa54ff53aUL,
    0x510e527fUL, 0x9b05688cUL, 0x1f83d9abUL, 0x5be0cd19UL};

static const uint32_t n3x_sha256_k[64] = {
    0x428a2f98UL, 0x71374491UL, 0xb5c0fbcfUL, 0xe9b5dba5UL, 0x3956c25bUL, 0x59f111f1UL,
    0x923f82a4UL, 0xab1c5ed5UL, 0xd807aa98UL, 0x12835b01UL, 0x243185beUL, 0x550c7dc3UL,
    0x72be5d74UL, 0x80deb1feUL, 0x9bdc06a7UL, 0xc19bf174UL, 0xe49b69c1UL, 0xefbe4786UL,
    0x0fc19dc6UL, 0x240ca1ccUL, 0x2de92c6fUL, 0x4a7484aaUL, 0x5cb0a9dcUL, 0x76f988daUL,
    0x983e5152UL, 0xa831c66dUL, 0xb00327c8UL, 0xbf597fc7UL, 0xc6e00bf3UL, 0xd5a79147UL,
    0x06ca6351UL, 0x14292967UL, 0x27b70a85UL, 0x2e1b2138UL, 0x4d2c6dfcUL, 0x53380d13UL,
    0x650a7354UL, 0x766a0abbUL, 0x81c2c92eUL, 0x92722c85UL, 0xa2bfe8a1UL, 0xa81a664bUL,
    0xc24b8b70UL, 0xc76c51a3UL, 0xd192e819UL, 0xd6990624UL, 0xf40e3585UL, 0x106aa070UL,
    0x19a4c116UL, 0x1e376c08UL, 0x2748774cUL, 0x34b0bcb5UL, 0x391c0cb3UL, 0x4ed8aa4aUL,
    0x5b9cca4fUL, 0x682e6ff3UL, 0x748f82eeUL, 0x78a5636fUL, 0x84c87814UL, 0x8cc70208UL,
    0x90befffaUL, 0xa4506cebUL, 0xbef9a3f7UL, 0xc67178f2UL};

#define N3X_SHA_BSIG0(x) (N3X_ROT(x, 2) ^ N3X_ROT(x, 13) ^ N3X_ROT(x, 22))
#define N3X_SHA_BSIG1(x) (N3X_ROT(x, 6) ^ N3X_ROT(x, 11) ^ N3X_ROT(x, 25))
#define N3X_SHA_SSIG0(x) (N3X_ROT(x, 7) ^ N3X_ROT(x, 18) ^ ((x) >> 3))
#define N3X_SHA_SSIG1(x) (N3X_ROT(x, 17) ^ N3X_ROT(x, 19) ^ ((x) >> 10))

/* One block: w[0..15] hold the message words, st the state; scalars or lane vectors. */
#define N3X_SHA_BLOCK(VT, st, w) do {                                                    \
    VT a_ = st[0], b_ = st[1], c_ = st[2], d_ = st[3];                                   \
    VT e_ = st[4], f_ = st[5], g_ = st[6], h_ = st[7];                                   \
    int t_;                                                                              \
    for (t_ = 16; t_ < 64; t_++)                                                         \
        w[t_] = w[t_ - 16] + N3X_SHA_SSIG0(w[t_ - 15]) + w[t_ - 7] + N3X_SHA_SSIG1(w[t_ - 2]); \
    for (t_ = 0; t_ < 64; t_++) {                                                        \
        VT t1_ = h_ + N3X_SHA_BSIG1(e_) + ((e_ & f_) ^ (~e_ & g_)) + n3x_sha256_k[t_] + w[t_]; \
        VT t2_ = N3X_SHA_BSIG0(a_) + ((a_ & b_) ^ (a_ & c_) ^ (b_ & c_));                \
        h_ = g_; g_ = f_; f_ = e_; e_ = d_ + t1_; d_ = c_; c_ = b_; b_ = a_; a_ = t1_ + t2_; \
    }                                                                                    \
    st[0] += a_; st[1] += b_; st[2] += c_; st[3] += d_;                                  \
    st[4] += e_; st[5] += f_; st[6] += g_; st[7] += h_;                                  \
} while (0)

static void n3x_sha256_blocks(uint32_t st[8], const uint8_t *p, size_t nblocks) {
    uint32_t w[64];
    int t;
    while (nblocks--) {
        for (t = 0; t < 16; t++) w[t] = n3x_load32_be(p + 4 * t);
        N3X_SHA_BLOCK(uint32_t, st, w);
        p += 64;
    }
}

static void n3x_sha256(const uint8_t *in, size_t len, uint8_t out[32]) {
    uint32_t st[8];
    uint8_t tail[128];
    size_t full = len / 64, rem = len % 64, tail_len;
    uint64_t bits = (uint64_t)len * 8;
    int i;
    memcpy(st, n3x_sha256_iv, sizeof st);
    n3x_sha256_blocks(st, in, full);
    memset(tail, 0, sizeof tail);
    if (rem) memcpy(tail, in + full * 64, rem);
    tail[rem] = 0x80;
    tail_len = rem + 9 <= 64 ? 64 : 128;
    for (i = 0; i < 8; i++) tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    n3x_sha256_blocks(st, tail, tail_len / 64);
    for (i = 0; i < 8; i++) n3x_store32_be(out + 4 * i, st[i]);
}

/* ---- RFC 9162 interior nodes: H(0x01 || left || right) ---- */
#define N3X_KIND_BLAKE3 1
#define N3X_KIND_SHA256 2

/* One BLAKE3 node: the 65-byte message is one full block and a block holding only
   the last byte of `right`, whose other words are zero constants the compiler folds. */
static void n3x_b3_node(const uint8_t *left, const uint8_t *right, uint8_t *out) {
    uint32_t m[16], v[16];
    uint32_t tail[16] = {0};
    int i;
    m[0] = 0x01u | ((uint32_t)left[0] << 8) | ((uint32_t)left[1] << 16) |
           ((uint32_t)left[2] << 24);
    for (i = 1; i < 8; i++) m[i] = n3x_load32_le(left + 4 * i - 1);
    m[8] = (uint32_t)left[31] | ((uint32_t)right[0] << 8) | ((uint32_t)right[1] << 16) |
           ((uint32_t)right[2] << 24);
    for (i = 9; i < 16; i++) m[i] = n3x_load32_le(right + 4 * (i - 8) - 1);
    tail[0] = right[31];
    for (i = 0; i < 8; i++) v[i] = n3x_b3_iv[i];
    for (i = 0; i < 4; i++) v[8 + i] = n3x_b3_iv[i];
    v[12] = 0; v[13] = 0; v[14] = N3X_B3_BLOCK_LEN; v[15] = N3X_B3_CHUNK_START;
    N3X_B3_ROUNDS(v, m);
    for (i = 0; i < 8; i++) v[i] ^= v[i + 8];
    for (i = 0; i < 4; i++) v[8 + i] = n3x_b3_iv[i];
    v[12] = 0; v[13] = 0; v[14] = 1; v[15] = N3X_B3_CHUNK_END | N3X_B3_ROOT;
    N3X_B3_ROUNDS(v, tail);
    for (i = 0; i < 8; i++) n3x_store32_le(out + 4 * i, v[i] ^ v[i + 8]);
}

/* One SHA-256 node: a full block, then `right`'s last byte, the 0x80 pad and the
   bit length 520 (constant words again). */
static void n3x_sha256_node(const uint8_t *left, const uint8_t *right, uint8_t *out) {
    uint32_t st[8], w[64];
    uint32_t last = right[31];
    int i;
    w[0] = 0x01000000u | ((uint32_t)left[0] << 16) | ((uint32_t)left[1] << 8) |
           (uint32_t)left[2];
    for (i = 1; i < 8; i++) w[i] = n3x_load32_be(left + 4 * i - 1);
    w[8] = ((uint32_t)left[31] << 24) | ((uint32_t)right[0] << 16) |
           ((uint32_t)right[1] << 8) | (uint32_t)right[2];
    for (i = 9; i < 16; i++) w[i] = n3x_load32_be(right + 4 * (i - 8) - 1);
    memcpy(st, n3x_sha256_iv, sizeof st);
    N3X_SHA_BLOCK(uint32_t, st, w);
    w[0] = (last << 24) | 0x00800000u;
    for (i = 1; i < 15; i++) w[i] = 0;
    w[15] = 520;
    N3X_SHA_BLOCK(uint32_t, st, w);
    for (i = 0; i < 8; i++) n3x_store32_be(out + 4 * i, st[i]);
}

/* One node; out may alias an input (every input is read before out is written). */
static void n3x_node_hash(int kind, const uint8_t *left, const uint8_t *right,
                          uint8_t *out) {
    if (kind == N3X_KIND_BLAKE3) n3x_b3_node(left, right, out);
    else n3x_sha256_node(left, right, out);
}

#ifdef N3X_VECTORS
/* LANES nodes at once: node k hashes the 64 bytes children[64k..64k+63] (its two
   child hashes, stored next to each other) into out[32k..32k+31]. Every input of a batch
   is read before any output is written, so out may be children itself (a level
   reduced in place). The 65-byte node message is two BLAKE3 blocks, or two SHA-256
   blocks once padded with 0x80 and the bit length 520. */
#define N3X_NODES_BODY(VT, LANES)                                                        \
    size_t base;                                                                         \
    const VT zero = {0};                                                                 \
    for (base = 0; base + (LANES) <= count; base += (LANES)) {                           \
        VT m[64], v[16], last = zero;                                                    \
        int i, lane;                                                                     \
        for (i = 0; i < 16; i++) {                                                       \
            VT word = zero;                                                              \
            for (lane = 0; lane < (LANES); lane++) {                                     \
                const uint8_t *c = children + 64 * (base + lane);                        \
                if (kind == N3X_KIND_BLAKE3)                                             \
                    word[lane] = i == 0 ? (0x01u | ((uint32_t)c[0] << 8) |               \
                                           ((uint32_t)c[1] << 16) | ((uint32_t)c[2] << 24)) \
                                        : n3x_load32_le(c + 4 * i - 1);                 \
                else                                                                     \
                    word[lane] = i == 0 ? (0x01000000u | ((uint32_t)c[0] << 16) |        \
                                           ((uint32_t)c[1] << 8) | (uint32_t)c[2])       \
                                        : n3x_load32_be(c + 4 * i - 1);                 \
            }                                                                            \
            m[i] = word;                                                                 \
        }                                                                                \
        for (lane = 0; lane < (LANES); lane++) last[lane] = children[64 * (base + lane) + 63]; \
        if (kind == N3X_KIND_BLAKE3) {                                                   \
            for (i = 0; i < 8; i++) v[i] = zero + n3x_b3_iv[i];                          \
            for (i = 0; i < 4; i++) v[8 + i] = zero + n3x_b3_iv[i];                      \
            v[12] = zero; v[13] = zero;                                                  \
            v[14] = zero + N3X_B3_BLOCK_LEN; v[15] = zero + N3X_B3_CHUNK_START;         \
            N3X_B3_ROUNDS(v, m);                                                         \
            for (i = 0; i < 8; i++) v[i] = v[i] ^ v[i + 8];                              \
            m[0] = last;                                                                 \
            for (i = 1; i < 16; i++) m[i] = zero;                                        \
            for (i = 0; i < 4; i++) v[8 + i] = zero + n3x_b3_iv[i];                      \
            v[12] = zero; v[13] = zero;                                                  \
            v[14] = zero + 1; v[15] = zero + (N3X_B3_CHUNK_END | N3X_B3_ROOT);          \
            N3X_B3_ROUNDS(v, m);                                                         \
            for (i = 0; i < 8; i++) {                                                    \
                VT h = v[i] ^ v[i + 8];                                                  \
                for (lane = 0; lane < (LANES); lane++)                                   \
                    n3x_store32_le(out + 32 * (base + lane) + 4 * i, h[lane]);           \
            }                                                                            \
        } else {                                                                         \
            for (i = 0; i < 8; i++) v[i] = zero + n3x_sha256_iv[i];                      \
            N3X_SHA_BLOCK(VT, v, m);                                                     \
            m[0] = (last << 24) | (zero + 0x00800000u);                                  \
            for (i = 1; i < 15; i++) m[i] = zero;                                        \
            m[15] = zero + 520;                                                          \
            N3X_SHA_BLOCK(VT, v, m);                                                     \
            for (i = 0; i < 8; i++)                                                      \
                for (lane = 0; lane < (LANES); lane++)                                   \
                    n3x_store32_be(out + 32 * (base + lane) + 4 * i, v[i][lane]);        \
        }                                                                                \
    }                                                                                    \
    for (; base < count; base++)                                                         \
        n3x_node_hash(kind, children + 64 * base, children + 64 * base + 32, out + 32 * base);

static void n3x_nodes_x4(int kind, const uint8_t *children, size_t count, uint8_t *out) {
    N3X_NODES_BODY(n3x_v4, 4)
}
#ifdef N3X_X86_WIDE
__attribute__((target("avx2")))
static void n3x_nodes_x8(int kind, const uint8_t *children, size_t count, uint8_t *out) {
    N3X_NODES_BODY(n3x_v8, 8)
}
__attribute__((target("avx512f")))
static void n3x_nodes_x16(int kind, const uint8_t *children, size_t count, uint8_t *out) {
    N3X_NODES_BODY(n3x_v16, 16)
}
#endif
#endif

static int n3x_lanes = 0;

/* Lanes used by n3x_nodes on this CPU; answered by the module for tests and reports. */
static int n3x_vector_lanes(void) {
    if (n3x_lanes == 0) {
        n3x_lanes = 1;
#ifdef N3X_VECTORS
        n3x_lanes = 4;
#ifdef N3X_X86_WIDE
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) n3x_lanes = 16;
        else if (__builtin_cpu_supports("avx2")) n3x_lanes = 8;
#endif
#endif
    }
    return n3x_lanes;
}

/* `count` independent nodes whose children lie next to each other (a tree level). */
static void n3x_nodes(int kind, const uint8_t *children, size_t count, uint8_t *out,
                      int max_lanes) {
    int lanes = n3x_vector_lanes();
    size_t k;
    if (max_lanes < lanes) lanes = max_lanes;
#ifdef N3X_VECTORS
#ifdef N3X_X86_WIDE
    if (lanes >= 16) { n3x_nodes_x16(kind, children, count, out); return; }
    if (lanes >= 8) { n3x_nodes_x8(kind, children, count, out); return; }
#endif
    if (lanes >= 4) { n3x_nodes_x4(kind, children, count, out); return; }
#endif
    for (k = 0; k < count; k++)
        n3x_node_hash(kind, children + 64 * k, children + 64 * k + 32, out + 32 * k);
}

static inline int n3x_bit_length(uint64_t x) {
    int n = 0;
    while (x) { n++; x >>= 1; }
    return n;
}

static inline int n3x_popcount(uint64_t x) {
    int n = 0;
    while (x) { n += (int)(x & 1); x >>= 1; }
    return n;
}

static inline int n3x_trailing_zeros(uint64_t x) {
    int n = 0;
    if (!x) return 64;
    while (!(x & 1)) { n++; x >>= 1; }
    return n;
}

#endif /* N3X_MERKLE_HASH_H */
