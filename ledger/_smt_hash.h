/* Many short BLAKE3 messages at once, for n3xus.ledger._smt_c (included by _smt_c.pyx).

   A state tree update hashes two short messages per changed key: the key (its path) and
   `0x00 || u8 len(key) || key || value` (its leaf hash). Nearly all are at most 64 bytes, so
   each is one BLAKE3 compression with the flags CHUNK_START | CHUNK_END | ROOT, and the
   compressions of different messages are independent: they run across SIMD lanes, the way
   canon/_merkle_hash.h hashes a tree level (whose BLAKE3 and lane types this reuses).
   Longer messages are hashed one at a time by the caller. Tested against the blake3 package
   through the tree's roots (tests/test_ledger_smt.py). */
#ifndef N3X_SMT_HASH_H
#define N3X_SMT_HASH_H

#include "../canon/_merkle_hash.h"

/* The BLAKE3 hashes of `count` messages of at most 64 bytes: message k is
   blocks[64k .. 64k + lens[k] - 1], zero-padded to 64 bytes; its hash goes to out[32k..]. */
#define N3X_SMT_BLOCKS_BODY(VT, LANES)                                                    \
    size_t base;                                                                          \
    const VT zero = {0};                                                                  \
    for (base = 0; base + (LANES) <= count; base += (LANES)) {                            \
        VT m[16], v[16], len = zero;                                                      \
        int i, lane;                                                                      \
        for (i = 0; i < 16; i++) {                                                        \
            VT word = zero;                                                               \
            for (lane = 0; lane < (LANES); lane++)                                        \
                word[lane] = n3x_load32_le(blocks + 64 * (base + lane) + 4 * i);          \
            m[i] = word;                                                                  \
        }                                                                                 \
        for (lane = 0; lane < (LANES); lane++) len[lane] = lens[base + lane];             \
        for (i = 0; i < 8; i++) v[i] = zero + n3x_b3_iv[i];                               \
        for (i = 0; i < 4; i++) v[8 + i] = zero + n3x_b3_iv[i];                           \
        v[12] = zero; v[13] = zero; v[14] = len;                                          \
        v[15] = zero + (N3X_B3_CHUNK_START | N3X_B3_CHUNK_END | N3X_B3_ROOT);            \
        N3X_B3_ROUNDS(v, m);                                                              \
        for (i = 0; i < 8; i++) {                                                         \
            VT h = v[i] ^ v[i + 8];                                                       \
            for (lane = 0; lane < (LANES); lane++)                                        \
                n3x_store32_le(out + 32 * (base + lane) + 4 * i, h[lane]);                \
        }                                                                                 \
    }                                                                                     \
    for (; base < count; base++) n3x_blake3(blocks + 64 * base, lens[base], out + 32 * base);

#ifdef N3X_VECTORS
static void n3x_smt_blocks_x4(const uint8_t *blocks, const uint32_t *lens, size_t count,
                              uint8_t *out) {
    N3X_SMT_BLOCKS_BODY(n3x_v4, 4)
}
#ifdef N3X_X86_WIDE
__attribute__((target("avx2")))
static void n3x_smt_blocks_x8(const uint8_t *blocks, const uint32_t *lens, size_t count,
                              uint8_t *out) {
    N3X_SMT_BLOCKS_BODY(n3x_v8, 8)
}
__attribute__((target("avx512f")))
static void n3x_smt_blocks_x16(const uint8_t *blocks, const uint32_t *lens, size_t count,
                               uint8_t *out) {
    N3X_SMT_BLOCKS_BODY(n3x_v16, 16)
}
#endif
#endif

static void n3x_smt_blocks(const uint8_t *blocks, const uint32_t *lens, size_t count,
                           uint8_t *out) {
    int lanes = n3x_vector_lanes();
    size_t k;
#ifdef N3X_VECTORS
#ifdef N3X_X86_WIDE
    if (lanes >= 16) { n3x_smt_blocks_x16(blocks, lens, count, out); return; }
    if (lanes >= 8) { n3x_smt_blocks_x8(blocks, lens, count, out); return; }
#endif
    if (lanes >= 4) { n3x_smt_blocks_x4(blocks, lens, count, out); return; }
#endif
    for (k = 0; k < count; k++) n3x_blake3(blocks + 64 * k, lens[k], out + 32 * k);
}

#endif /* N3X_SMT_HASH_H */
