/* The fine-histogram fold of shadowlab.drift in one loop over the values.
 *
 * numpy needs a dozen array passes to bin a chunk and three scattered updates (np.bincount,
 * np.minimum.at, np.maximum.at) to add it up; here each value is binned and added in one step.
 * The bin ids are those of drift._DyadicGrid.bin_np and drift._Grid.bin_np, integer step for
 * integer step and the same IEEE operations (built with -ffp-contract=off: no fused
 * multiply-add), so the histograms are identical, which tests/test_native.py checks.
 * Loaded with ctypes by shadowlab/_native.py; the numpy path is used when it is absent.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MISSING_BIN (-2) /* drift.MISSING_BIN: null/NaN */
#define ABI_VERSION 1

int64_t shadowlab_fold_abi(void) { return ABI_VERSION; }

static inline int64_t bits_of(double v) {
    int64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

/* _DyadicGrid: the half-key from the bits of u = min(x, 1 - x), mirrored on the upper half */
static inline int64_t dyadic_id(double x, int64_t mb, int64_t base, int64_t half, int64_t bins) {
    if (isnan(x)) return MISSING_BIN;
    if (x < 0.0) return -1;
    if (x > 1.0) return bins;
    int64_t a = bits_of(x), b = bits_of(1.0 - x);
    int64_t k = (a < b ? a : b) >> (52 - mb);
    k -= base;
    k = k < 0 ? 0 : k;
    /* 2 * half - 1 - k on the upper half, without a branch (scores are on both sides of 0.5
       at random: a branch would be mispredicted half the time) */
    int64_t up = -(int64_t)(x >= 0.5);
    return (k ^ up) + (up & (2 * half));
}

/* _Grid: floor((x - lo) * scale) clipped to [0, bins - 1] */
static inline int64_t width_id(double x, double lo, double hi, double scale, int64_t bins) {
    if (isnan(x)) return MISSING_BIN;
    if (x < lo) return -1;
    if (x > hi) return bins;
    double f = floor((x - lo) * scale);
    if (f < 0.0) f = 0.0;
    if (f > (double)(bins - 1)) f = (double)(bins - 1);
    return (int64_t)f;
}

typedef struct {
    int64_t kind; /* 0 dyadic, 1 equal width */
    int64_t mb, base, half, bins;
    double lo, hi, scale;
} grid_t;

static grid_t make_grid(int64_t kind, int64_t exponents, int64_t mantissa_bits, double lo,
                        double hi, int64_t bins) {
    grid_t g;
    g.kind = kind;
    g.mb = mantissa_bits;
    g.base = ((1023 - exponents) << mantissa_bits) - 1;
    g.half = (exponents - 1) * ((int64_t)1 << mantissa_bits) + 1;
    g.bins = bins;
    g.lo = lo;
    g.hi = hi;
    g.scale = hi > lo ? (double)bins / (hi - lo) : 0.0;
    return g;
}

static inline int64_t grid_id(const grid_t *g, double x) {
    return g->kind == 0 ? dyadic_id(x, g->mb, g->base, g->half, g->bins)
                        : width_id(x, g->lo, g->hi, g->scale, g->bins);
}

/* out[i] = bin id of x[i] plus shift */
void shadowlab_bin_ids(const double *x, int64_t n, int64_t kind, int64_t exponents,
                       int64_t mantissa_bits, double lo, double hi, int64_t bins, int64_t shift,
                       int64_t *out) {
    grid_t g = make_grid(kind, exponents, mantissa_bits, lo, hi, bins);
    for (int64_t i = 0; i < n; i++) out[i] = grid_id(&g, x[i]) + shift;
}

/* Add n values to the per-slot accumulators (slot = bin id - MISSING_BIN): counts; for every
 * slot but the missing one, minimum and maximum, and (when s is not NULL) the sum of
 * x - lefts[slot] in value order, as np.bincount(weights=...) adds them. */
void shadowlab_fold(const double *x, int64_t n, int64_t kind, int64_t exponents,
                    int64_t mantissa_bits, double lo, double hi, int64_t bins, int64_t *cnt,
                    double *mn, double *mx, double *s, const double *lefts) {
    grid_t g = make_grid(kind, exponents, mantissa_bits, lo, hi, bins);
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        int64_t k = grid_id(&g, v) - MISSING_BIN;
        cnt[k]++;
        if (k == 0) continue;
        double lo_k = mn[k], hi_k = mx[k];
        mn[k] = v < lo_k ? v : lo_k; /* minsd / maxsd: no branch to mispredict */
        mx[k] = v > hi_k ? v : hi_k;
        if (s) s[k] += v - lefts[k];
    }
}
