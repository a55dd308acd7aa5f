/* CRC32C with a one-time choice between CPU instructions and tables.
 *
 * On x86_64 CMake compiles this whole file with -msse4.2 so that the SSE4.2
 * intrinsics are available. Nothing else here may use SSE3+ instructions the
 * compiler might pick on its own, because a CPU without SSE4.2 runs it: every
 * function except crc_sse42() is therefore marked OH_BASELINE, which turns the
 * extensions back off, and crc_sse42() only runs after cpuid said yes. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#  define OH_CRC_X86 1
#  include <nmmintrin.h>
#  define OH_BASELINE __attribute__((target("no-sse3")))
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#  define OH_CRC_ARM 1
#  define OH_BASELINE
#  if !defined(__ARM_FEATURE_CRC32) && defined(__linux__)
#    include <sys/auxv.h>
#    ifndef HWCAP_CRC32
#      define HWCAP_CRC32 (1 << 7)
#    endif
#  endif
#else
#  define OH_BASELINE
#endif

/* ------------------------------------------------------------------ */
/* Portable: slice-by-8                                                */
/* ------------------------------------------------------------------ */

static uint32_t table[8][256];

OH_BASELINE static void build_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
}

OH_BASELINE static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* `crc` is the raw (pre-inverted) register in every kernel below. */
OH_BASELINE static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = load_le32(p) ^ crc;
        uint32_t hi = load_le32(p + 4);
        crc = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^
              table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24] ^
              table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^
              table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

/* ------------------------------------------------------------------ */
/* Combining interleaved streams (x86_64)                              */
/* ------------------------------------------------------------------ */

#if defined(OH_CRC_X86)
/* The CRC register update is linear, so the register after A||B equals the
 * register after A advanced over |B| zero bytes, xor the register after B
 * started from 0. "Advance over L zero bytes" is a fixed 32x32 bit matrix,
 * kept as four byte-indexed tables. That lets three independent streams run
 * through the CRC unit at once (the instruction's latency is ~3 cycles, its
 * throughput 1 per cycle) and be stitched together afterwards. */
#define LONG_STREAM 4096u
#define SHORT_STREAM 256u

static uint32_t shift_long[4][256];
static uint32_t shift_short[4][256];

OH_BASELINE static uint32_t advance_zeros(uint32_t reg, size_t n)
{
    while (n--)
        reg = (reg >> 8) ^ table[0][reg & 0xFF];
    return reg;
}

OH_BASELINE static void build_shift(uint32_t t[4][256], size_t n)
{
    uint32_t basis[32];
    for (int j = 0; j < 32; j++)
        basis[j] = advance_zeros(1u << j, n);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int bit = 0; bit < 8; bit++)
                if ((b >> bit) & 1u)
                    v ^= basis[8 * k + bit];
            t[k][b] = v;
        }
}

static inline uint32_t shift(const uint32_t t[4][256], uint32_t reg)
{
    return t[0][reg & 0xFF] ^ t[1][(reg >> 8) & 0xFF] ^ t[2][(reg >> 16) & 0xFF] ^
           t[3][reg >> 24];
}
#endif

/* ------------------------------------------------------------------ */
/* CPU instructions                                                    */
/* ------------------------------------------------------------------ */

#if defined(OH_CRC_X86)
/* Three streams of `len` bytes each (a multiple of 8) starting at p. */
static inline uint32_t sse42_three(uint32_t crc, const uint8_t *p, size_t len,
                                   const uint32_t t[4][256])
{
    uint64_t c0 = crc, c1 = 0, c2 = 0;
    const uint8_t *end = p + len;
    do {
        uint64_t v0, v1, v2;
        memcpy(&v0, p, 8);
        memcpy(&v1, p + len, 8);
        memcpy(&v2, p + 2 * len, 8);
        c0 = _mm_crc32_u64(c0, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
        p += 8;
    } while (p < end);
    crc = shift(t, (uint32_t)c0) ^ (uint32_t)c1;
    return shift(t, crc) ^ (uint32_t)c2;
}

static uint32_t crc_sse42(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c;
    while (n > 0 && ((uintptr_t)p & 7u) != 0) {
        crc = _mm_crc32_u8(crc, *p++);
        n--;
    }
    while (n >= 3 * LONG_STREAM) {
        crc = sse42_three(crc, p, LONG_STREAM, shift_long);
        p += 3 * LONG_STREAM;
        n -= 3 * LONG_STREAM;
    }
    while (n >= 3 * SHORT_STREAM) {
        crc = sse42_three(crc, p, SHORT_STREAM, shift_short);
        p += 3 * SHORT_STREAM;
        n -= 3 * SHORT_STREAM;
    }
    c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}

OH_BASELINE static int have_hw(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
}
#  define HW_KERNEL crc_sse42
#  define HW_NAME "sse4.2"

#elif defined(OH_CRC_ARM)
#  if defined(__ARM_FEATURE_CRC32)
#    define OH_ARM_TARGET
#  elif defined(__clang__)
#    define OH_ARM_TARGET __attribute__((target("crc")))
#  else
#    define OH_ARM_TARGET __attribute__((target("+crc")))
#  endif
#  if defined(__clang__)
#    define OH_CRC32CD(c, v) __builtin_arm_crc32cd((c), (v))
#    define OH_CRC32CB(c, v) __builtin_arm_crc32cb((c), (v))
#  else
#    define OH_CRC32CD(c, v) __builtin_aarch64_crc32cx((c), (v))
#    define OH_CRC32CB(c, v) __builtin_aarch64_crc32cb((c), (v))
#  endif

OH_ARM_TARGET static uint32_t crc_armv8(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n > 0 && ((uintptr_t)p & 7u) != 0) {
        crc = OH_CRC32CB(crc, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        crc = OH_CRC32CD(crc, v);
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = OH_CRC32CB(crc, *p++);
    return crc;
}

static int have_hw(void)
{
#  if defined(__ARM_FEATURE_CRC32)
    return 1;
#  elif defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#  else
    return 0;
#  endif
}
#  define HW_KERNEL crc_armv8
#  define HW_NAME "armv8-crc"
#endif

/* ------------------------------------------------------------------ */
/* One-time choice                                                     */
/* ------------------------------------------------------------------ */

typedef uint32_t (*kernel_fn)(uint32_t, const uint8_t *, size_t);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static kernel_fn kernel = crc_sw;
static int kernel_is_hw = 0;

OH_BASELINE static void choose(void)
{
    build_tables(); /* the software path is always available for _crc32c_sw */
#if defined(HW_KERNEL)
    if (have_hw()) {
#  if defined(OH_CRC_X86)
        build_shift(shift_long, LONG_STREAM);
        build_shift(shift_short, SHORT_STREAM);
#  endif
        kernel = HW_KERNEL;
        kernel_is_hw = 1;
    }
#endif
}

OH_BASELINE uint32_t oh_crc32c(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&once, choose);
    return ~kernel(~crc, (const uint8_t *)data, n);
}

OH_BASELINE uint32_t oh_crc32c_sw(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&once, choose);
    return ~crc_sw(~crc, (const uint8_t *)data, n);
}

OH_BASELINE int oh_crc32c_hw(void)
{
    pthread_once(&once, choose);
    return kernel_is_hw;
}

OH_BASELINE const char *oh_crc32c_impl(void)
{
    pthread_once(&once, choose);
#if defined(HW_KERNEL)
    if (kernel_is_hw)
        return HW_NAME;
#endif
    return "slice-by-8";
}
