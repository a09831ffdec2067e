/* The fine-histogram fold of shadowlab.drift in one loop over the values.
 *
 * numpy needs a dozen array passes to bin a chunk and three scattered updates (np.bincount,
 * np.minimum.at, np.maximum.at) to add it up; here each value is binned and added in one step.
 * The bin ids are those of drift._DyadicGrid.bin_np and drift._Grid.bin_np, integer step for
 * integer step and the same IEEE operations (built with -ffp-contract=off: no fused
 * multiply-add), so the histograms are identical, which tests/test_native.py checks.
 * Loaded with ctypes by shadowlab/_native.py; the numpy path is used when it is absent.
 *
 * Also here: the first histogram of shadowlab.thresholds.calibrate_threshold (cells keyed by
 * hour, v1 flag, candidate bin and segment), as a hash table in place of polars' group-by.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MISSING_BIN (-2) /* drift.MISSING_BIN: null/NaN */
#define ABI_VERSION 2

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

/* ---- calibrate_threshold's hour histogram ------------------------------------------------ *
 *
 * The cells of thresholds._hist_agg: per (segment, key) with key = hour * width + inner + 1,
 * width = 2 nbins + 1, inner = v1 flag * nbins + candidate bin, or -1 when either score is not
 * finite; hour = floor(epoch microseconds / 3600e6); bin = clip(floor(c * scale), -1, scale) +
 * 1. Per cell: rows, minimum and maximum of the finite candidate scores, and how many of them
 * reach t1. The same integer steps and IEEE operations as the polars expressions, so the
 * summary is identical (tests/test_thresholds.py). A null timestamp makes the whole key null:
 * one cell per segment.
 *
 * The cells of one (hour, segment) are a dense block of width cells; a table maps (hour,
 * segment) to its block, and each segment remembers its last block (the logs come in time
 * order, so the block changes about once an hour). Segments arrive as two 64-bit hashes of
 * their values with different seeds: the first gives the segment its number, the second must
 * then agree on every row, or the call reports a collision. Tables are open addressing with
 * linear probing at a load factor of at most 1/2 (Knuth, TAOCP 3, 6.4), grown by doubling. */

#define NULL_US INT64_MIN   /* a null timestamp (_native.NULL_US) */
#define NULL_HOUR INT64_MIN /* its block's hour */
#define HH_NOMEM (-1)
#define HH_COLLISION (-2)
#define HH_TOO_SPARSE (-3)

typedef struct {
    int64_t n, naive;
    double mn, mx;
} cell_t;

typedef struct {
    int64_t width, max_cells;
    int64_t gcap, gsize;  /* segments: table slots, numbers in use */
    uint64_t *gkey, *gcheck;
    int64_t *gslot;       /* number + 1, 0 when empty */
    int64_t *last_hour, *last_block;
    int64_t bcap, bsize;  /* blocks: table slots, blocks in use */
    int64_t *bhour, *bseg;
    int64_t *bslot;       /* block + 1, 0 when empty */
    cell_t *cells;        /* bsize * width */
} hhist_t;

static inline uint64_t mix64(uint64_t x) { /* splitmix64's finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void shadowlab_hhist_free(hhist_t *h) {
    if (!h) return;
    free(h->gkey);
    free(h->gcheck);
    free(h->gslot);
    free(h->last_hour);
    free(h->last_block);
    free(h->bhour);
    free(h->bseg);
    free(h->bslot);
    free(h->cells);
    free(h);
}

/* Entry i (hash hv) into the first empty slot from hv's (linear probing). */
static inline void slot_put(int64_t *slot, int64_t cap, uint64_t hv, int64_t i) {
    uint64_t mask = (uint64_t)cap - 1, s = hv & mask;
    while (slot[s]) s = (s + 1) & mask;
    slot[s] = i + 1;
}

static void *grow(void *p, int64_t count, size_t size, int *ok) {
    void *q = realloc(p, (size_t)count * size);
    if (!q) *ok = 0;
    return q ? q : p;
}

static int segments_grow(hhist_t *h) {
    int64_t cap = h->gcap ? 2 * h->gcap : 64, half = cap / 2;
    int ok = 1;
    int64_t *gslot = calloc((size_t)cap, sizeof *gslot);
    if (!gslot) return -1;
    h->gkey = grow(h->gkey, half, sizeof *h->gkey, &ok);
    h->gcheck = grow(h->gcheck, half, sizeof *h->gcheck, &ok);
    h->last_hour = grow(h->last_hour, half, sizeof *h->last_hour, &ok);
    h->last_block = grow(h->last_block, half, sizeof *h->last_block, &ok);
    if (!ok) {
        free(gslot);
        return -1;
    }
    for (int64_t i = 0; i < h->gsize; i++) slot_put(gslot, cap, mix64(h->gkey[i]), i);
    free(h->gslot);
    h->gslot = gslot;
    h->gcap = cap;
    return 0;
}

static inline uint64_t block_hash(int64_t hour, int64_t seg) {
    return mix64((uint64_t)hour ^ mix64((uint64_t)seg + 1));
}

static int blocks_grow(hhist_t *h) {
    int64_t cap = h->bcap ? 2 * h->bcap : 1024, half = cap / 2;
    int ok = 1;
    int64_t *bslot = calloc((size_t)cap, sizeof *bslot);
    if (!bslot) return -1;
    h->bhour = grow(h->bhour, half, sizeof *h->bhour, &ok);
    h->bseg = grow(h->bseg, half, sizeof *h->bseg, &ok);
    h->cells = grow(h->cells, half * h->width, sizeof *h->cells, &ok);
    if (!ok) {
        free(bslot);
        return -1;
    }
    for (int64_t i = 0; i < h->bsize; i++)
        slot_put(bslot, cap, block_hash(h->bhour[i], h->bseg[i]), i);
    free(h->bslot);
    h->bslot = bslot;
    h->bcap = cap;
    return 0;
}

/* max_cells bounds the dense cells (a guard against very many sparse segments) */
hhist_t *shadowlab_hhist_new(int64_t nbins, int64_t max_cells) {
    hhist_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->width = 2 * nbins + 1;
    h->max_cells = max_cells;
    if (segments_grow(h) || blocks_grow(h)) {
        shadowlab_hhist_free(h);
        return NULL;
    }
    return h;
}

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static int64_t find_block(hhist_t *h, int64_t hour, int64_t seg) {
    uint64_t mask = (uint64_t)h->bcap - 1, s = block_hash(hour, seg) & mask;
    for (;;) {
        int64_t e = h->bslot[s];
        if (!e) break;
        if (h->bhour[e - 1] == hour && h->bseg[e - 1] == seg) return e - 1;
        s = (s + 1) & mask;
    }
    if ((h->bsize + 1) * h->width > h->max_cells) return HH_TOO_SPARSE;
    if (2 * (h->bsize + 1) > h->bcap && blocks_grow(h)) return HH_NOMEM;
    int64_t b = h->bsize++;
    slot_put(h->bslot, h->bcap, block_hash(hour, seg), b);
    h->bhour[b] = hour;
    h->bseg[b] = seg;
    cell_t *c = h->cells + b * h->width;
    for (int64_t j = 0; j < h->width; j++) {
        c[j].n = c[j].naive = 0;
        c[j].mn = INFINITY;
        c[j].mx = -INFINITY;
    }
    return b;
}

/* Add n rows. seg_code[i] gets row i's segment number; first_row[j] the row of the j-th number
 * this call created (numbers go in order of first appearance). Returns how many numbers the
 * call created, or HH_NOMEM, HH_COLLISION or HH_TOO_SPARSE (the histogram is then unusable). */
int64_t shadowlab_hhist_add(hhist_t *h, const int64_t *us, const double *p, const double *c,
                            const uint64_t *seg, const uint64_t *check, int64_t n, double t1,
                            int64_t inclusive, int64_t nbins, double scale, int32_t *seg_code,
                            int64_t *first_row) {
    int64_t created = 0, width = h->width;
    uint64_t last_seg = 0;
    int64_t code = -1;
    /* the hour of the last row and its span [lo, lo + 1 h): a division only on a new hour */
    const int64_t H = 3600000000LL;
    int64_t cur_hour = 0, cur_lo = 1, cur_hi = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t g = seg[i];
        if (code < 0 || g != last_seg) { /* rows of one segment often come in runs */
            uint64_t gm = (uint64_t)h->gcap - 1, s = mix64(g) & gm;
            while (h->gslot[s] && h->gkey[h->gslot[s] - 1] != g) s = (s + 1) & gm;
            if (h->gslot[s]) {
                code = h->gslot[s] - 1;
            } else {
                if (2 * (h->gsize + 1) > h->gcap && segments_grow(h)) return HH_NOMEM;
                code = h->gsize++;
                h->gkey[code] = g;
                h->gcheck[code] = check[i];
                h->last_block[code] = -1;
                slot_put(h->gslot, h->gcap, mix64(g), code);
                first_row[created++] = i;
            }
            last_seg = g;
        }
        if (h->gcheck[code] != check[i]) return HH_COLLISION;
        seg_code[i] = (int32_t)code;

        double pv = p[i], cv = c[i];
        int cok = isfinite(cv);
        int64_t hour, j;
        if (us[i] == NULL_US) {
            hour = NULL_HOUR;
            j = 0;
        } else {
            int64_t t = us[i];
            if (!(t >= cur_lo && t < cur_hi)) {
                cur_hour = floor_div(t, H);
                cur_lo = cur_hour * H;
                cur_hi = cur_hour < INT64_MAX / H ? cur_lo + H : INT64_MAX;
            }
            hour = cur_hour;
            j = 0; /* inner + 1 */
            if (cok && isfinite(pv)) {
                /* clip(floor(x), -1, scale) without a call to floor: below 0 it is -1 after
                   the clip, and on [0, scale) truncation is the floor */
                double x = cv * scale;
                int64_t f = x < 0.0 ? -1 : (x >= scale ? (int64_t)scale : (int64_t)x);
                int64_t flag = inclusive ? pv >= t1 : pv > t1;
                j = flag * nbins + f + 2;
            }
        }
        int64_t b = h->last_block[code];
        if (b < 0 || h->last_hour[code] != hour) {
            b = find_block(h, hour, code);
            if (b < 0) return b;
            h->last_block[code] = b;
            h->last_hour[code] = hour;
        }
        cell_t *cell = h->cells + b * width + j;
        cell->n++;
        if (cok) {
            double lo = cell->mn, hi = cell->mx;
            cell->mn = cv < lo ? cv : lo;
            cell->mx = cv > hi ? cv : hi;
            cell->naive += inclusive ? cv >= t1 : cv > t1;
        }
    }
    return created;
}

/* Cells holding a row. */
int64_t shadowlab_hhist_size(const hhist_t *h) {
    int64_t m = 0, all = h->bsize * h->width;
    for (int64_t i = 0; i < all; i++) m += h->cells[i].n > 0;
    return m;
}

/* The cells holding a row, block by block; null_ts[i] marks a null timestamp (key 0). */
void shadowlab_hhist_export(const hhist_t *h, int64_t *key, int8_t *null_ts, int64_t *code,
                            int64_t *n, double *mn, double *mx, int64_t *naive) {
    int64_t m = 0;
    for (int64_t b = 0; b < h->bsize; b++) {
        const cell_t *c = h->cells + b * h->width;
        for (int64_t j = 0; j < h->width; j++) {
            if (!c[j].n) continue;
            int nul = h->bhour[b] == NULL_HOUR;
            key[m] = nul ? 0 : h->bhour[b] * h->width + j;
            null_ts[m] = (int8_t)nul;
            code[m] = h->bseg[b];
            n[m] = c[j].n;
            mn[m] = c[j].mn;
            mx[m] = c[j].mx;
            naive[m] = c[j].naive;
            m++;
        }
    }
}
