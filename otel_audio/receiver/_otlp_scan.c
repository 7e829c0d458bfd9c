/* Native scanner of serialized OTLP ExportMetricsServiceRequest messages: the hot path of metric ingest.
 *
 * scan_numbers(buf, seed) walks the protobuf wire format of the request once, without building
 * protobuf objects, and returns the gauge and sum data points (NumberDataPoint) as columns, plus
 * what describes them (resources, scopes, metrics). Everything else (resource and scope
 * attributes, histograms, summaries, exemplars) is left to the Python decoder, located by byte
 * offsets. otel_audio/receiver/fastscan.py wraps the result; read it for the meaning of each column.
 *
 * Field numbers are those of opentelemetry-proto (tests/test_fastscan.py checks them against the
 * installed descriptors). Parsing follows upb, the protobuf runtime of the Python package:
 * a known field number with an unexpected wire type is an unknown field and skipped; singular
 * scalars and strings keep their last value; a oneof member replaces another member; unknown
 * groups are skipped; tags are at most 5 bytes, lengths at most 5 bytes and below 2^31, other
 * varints at most 10 bytes; nesting deeper than 100 is refused.
 *
 * Safety: every read is bounds-checked against the end of its enclosing message; malformed input
 * raises ValueError naming the byte offset. The walk runs without the GIL over a Py_buffer that stays
 * exported (a bytearray cannot be resized meanwhile); Python objects are built afterwards.
 *
 * Hashes are XXH64 (the public xxHash algorithm), seeded by the caller: attribute and series keys are
 * cache keys for one process, never stored.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- field numbers */

enum {
    REQUEST_RESOURCE_METRICS = 1,
    RESOURCE_METRICS_RESOURCE = 1,
    RESOURCE_METRICS_SCOPE_METRICS = 2,
    SCOPE_METRICS_SCOPE = 1,
    SCOPE_METRICS_METRICS = 2,
    METRIC_NAME = 1,
    METRIC_DESCRIPTION = 2,
    METRIC_UNIT = 3,
    METRIC_GAUGE = 5,
    METRIC_SUM = 7,
    METRIC_HISTOGRAM = 9,
    METRIC_EXPONENTIAL_HISTOGRAM = 10,
    METRIC_SUMMARY = 11,
    GAUGE_DATA_POINTS = 1,
    SUM_DATA_POINTS = 1,
    SUM_AGGREGATION_TEMPORALITY = 2,
    SUM_IS_MONOTONIC = 3,
    POINT_START_TIME = 2,
    POINT_TIME = 3,
    POINT_AS_DOUBLE = 4,
    POINT_EXEMPLARS = 5,
    POINT_AS_INT = 6,
    POINT_ATTRIBUTES = 7,
    POINT_FLAGS = 8,
};

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_START_GROUP = 3, WT_END_GROUP = 4, WT_FIXED32 = 5 };

/* Metric kinds: which member of Metric.data is set (the last one on the wire). */
enum { KIND_NONE = 0, KIND_GAUGE = 1, KIND_SUM = 2, KIND_HISTOGRAM = 3, KIND_EXPONENTIAL_HISTOGRAM = 4,
       KIND_SUMMARY = 5 };

/* Which member of NumberDataPoint.value is set. */
enum { VALUE_NONE = 0, VALUE_DOUBLE = 1, VALUE_INT = 2 };

#define MAX_DEPTH 100 /* upb's default recursion limit, groups included */

/* ---------------------------------------------------------------- XXH64 */

static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL, P3 = 0x165667B19E3779F9ULL,
                      P4 = 0x85EBCA77C2B2AE63ULL, P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t input) {
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t val) {
    acc ^= xxh_round(0, val);
    return acc * P1 + P4;
}

static uint64_t xxh64(const uint8_t *p, size_t len, uint64_t seed) {
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = xxh_round(v1, le64(p));
            v2 = xxh_round(v2, le64(p + 8));
            v3 = xxh_round(v3, le64(p + 16));
            v4 = xxh_round(v4, le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= xxh_round(0, le64(p));
        h = rotl64(h, 27) * P1 + P4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)le32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (*p) * P5;
        h = rotl64(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

/* A 64-bit value folded into a running hash (lengths, counts, and component boundaries). */
static inline uint64_t xxh_u64(uint64_t value, uint64_t seed) {
    uint8_t raw[8];
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)(value >> (8 * i));
    return xxh64(raw, 8, seed);
}

/* ---------------------------------------------------------------- growable arrays */

typedef struct {
    char *data;
    size_t size; /* elements */
    size_t cap;
    size_t elem;
} Vec;

static int vec_reserve(Vec *v, size_t n) {
    if (n <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < n) cap *= 2;
    char *data = realloc(v->data, cap * v->elem);
    if (data == NULL) return -1;
    v->data = data;
    v->cap = cap;
    return 0;
}

#define VEC_AT(v, type, i) (((type *)(v).data)[i])

/* ---------------------------------------------------------------- scan state */

/* One column per field of a point (struct of arrays, so Python wraps each with numpy). */
enum {
    PC_METRIC,        /* int32: index into the metric columns */
    PC_START,         /* uint64: start_time_unix_nano */
    PC_TIME,          /* uint64: time_unix_nano */
    PC_VALUE,         /* float64: as_double, or as_int converted */
    PC_VALUE_KIND,    /* uint8: VALUE_* */
    PC_FLAGS,         /* uint32 */
    PC_ATTR_COUNT,    /* uint32: attribute fields */
    PC_ATTR_HASH,     /* uint64: the attribute fields' payloads, in order */
    PC_SERIES_KEY,    /* uint64: attr hash mixed with resource, scope and metric name */
    PC_ATTR_OFFSET,   /* int64: first byte of the first attribute field (its tag) */
    PC_ATTR_LENGTH,   /* int64: up to the end of the last attribute field; 0 without attributes */
    PC_EXEMPLARS,     /* uint32: exemplar fields */
    PC_POINT_OFFSET,  /* int64: the NumberDataPoint message (payload) */
    PC_POINT_LENGTH,  /* int64 */
    PC_COUNT
};

static const char *const POINT_COLUMNS[PC_COUNT] = {
    "metric", "start_time_unix_nano", "time_unix_nano", "value", "value_kind", "flags", "attr_count",
    "attr_hash", "series_key", "attr_offset", "attr_length", "exemplar_count", "point_offset", "point_length",
};
static const size_t POINT_SIZES[PC_COUNT] = {4, 8, 8, 8, 1, 4, 4, 8, 8, 8, 8, 4, 8, 8};

typedef struct {
    int64_t offset, length;
} Span;

typedef struct {
    int32_t owner; /* resource or scope index */
    Span span;
} Part;

typedef struct {
    int32_t scope;
    int32_t kind;
    int32_t temporality;
    uint8_t monotonic;
    Span name, description, unit, message;
    int64_t first_point, points;
} MetricRow;

typedef struct {
    int32_t resource;
    uint64_t hash; /* resource hash, then this scope's message parts */
} ScopeRow;

typedef struct {
    const uint8_t *base;
    uint64_t seed;
    Vec points[PC_COUNT];
    size_t npoints, points_cap;
    Vec resource_parts; /* Part: each Resource field of each ResourceMetrics, in order */
    Vec resource_hash;  /* uint64 per resource */
    Vec scope_parts;    /* Part */
    Vec scopes;         /* ScopeRow */
    Vec metrics;        /* MetricRow */
    int nomem;
    int64_t err_offset;
    const char *err_msg;
} Scan;

static void scan_free(Scan *s) {
    for (int c = 0; c < PC_COUNT; c++) free(s->points[c].data);
    free(s->resource_parts.data);
    free(s->resource_hash.data);
    free(s->scope_parts.data);
    free(s->scopes.data);
    free(s->metrics.data);
}

static void scan_init(Scan *s, const uint8_t *base, uint64_t seed) {
    memset(s, 0, sizeof(*s));
    s->base = base;
    s->seed = seed;
    for (int c = 0; c < PC_COUNT; c++) s->points[c].elem = POINT_SIZES[c];
    s->resource_parts.elem = sizeof(Part);
    s->resource_hash.elem = sizeof(uint64_t);
    s->scope_parts.elem = sizeof(Part);
    s->scopes.elem = sizeof(ScopeRow);
    s->metrics.elem = sizeof(MetricRow);
}

static int fail(Scan *s, const uint8_t *at, const char *msg) {
    if (s->err_msg == NULL) {
        s->err_offset = (int64_t)(at - s->base);
        s->err_msg = msg;
    }
    return -1;
}

static int out_of_memory(Scan *s) {
    s->nomem = 1;
    return -1;
}

static int push(Scan *s, Vec *v, const void *elem) {
    if (vec_reserve(v, v->size + 1) < 0) return out_of_memory(s);
    memcpy(v->data + v->size * v->elem, elem, v->elem);
    v->size++;
    return 0;
}

static int grow_points(Scan *s) {
    if (s->npoints < s->points_cap) return 0;
    size_t cap = s->points_cap ? s->points_cap * 2 : 256;
    for (int c = 0; c < PC_COUNT; c++)
        if (vec_reserve(&s->points[c], cap) < 0) return out_of_memory(s);
    s->points_cap = cap;
    return 0;
}

/* ---------------------------------------------------------------- wire format */

/* A varint of at most 10 bytes; bits beyond 64 are dropped, as upb does. */
static inline int read_varint(Scan *s, const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return fail(s, p, "truncated varint");
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            *pp = p;
            return 0;
        }
    }
    return fail(s, *pp, "varint longer than 10 bytes");
}

/* A field's tag. Field number 0 is refused, except inside unknown groups, where upb accepts it. */
static inline int read_tag_any(Scan *s, const uint8_t **pp, const uint8_t *end, uint32_t *field, int *wt) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    if (p < end && *p < 0x80) { /* one-byte tags: fields 1-15, nearly every tag of a request */
        v = *p++;
    } else {
        for (int i = 0;; i++) {
            if (i == 5) return fail(s, *pp, "tag longer than 5 bytes");
            if (p >= end) return fail(s, p, "truncated tag");
            uint8_t b = *p++;
            v |= (uint64_t)(b & 0x7f) << (7 * i);
            if (!(b & 0x80)) break;
        }
        if (v > 0xffffffffULL) return fail(s, *pp, "tag beyond 32 bits");
    }
    *field = (uint32_t)(v >> 3);
    *wt = (int)(v & 7);
    *pp = p;
    return 0;
}

static inline int read_tag(Scan *s, const uint8_t **pp, const uint8_t *end, uint32_t *field, int *wt) {
    const uint8_t *at = *pp;
    if (read_tag_any(s, pp, end, field, wt) < 0) return -1;
    if (*field == 0) return fail(s, at, "field number 0");
    return 0;
}

/* The payload of a length-delimited field: [*start, *start + *len). */
static inline int read_len(Scan *s, const uint8_t **pp, const uint8_t *end, const uint8_t **start,
                           size_t *len) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int i = 0;; i++) {
        if (i == 5) return fail(s, *pp, "length longer than 5 bytes");
        if (p >= end) return fail(s, p, "truncated length");
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) break;
    }
    if (v > 0x7fffffffULL) return fail(s, *pp, "length beyond 2^31");
    if (v > (uint64_t)(end - p)) return fail(s, *pp, "length beyond the end of the enclosing message");
    *start = p;
    *len = (size_t)v;
    *pp = p + v;
    return 0;
}

static inline int read_fixed64(Scan *s, const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    if (end - *pp < 8) return fail(s, *pp, "truncated fixed64");
    *out = le64(*pp);
    *pp += 8;
    return 0;
}

/* Skips the value of a field whose tag was just read; groups up to the matching end tag. */
static int skip_field(Scan *s, const uint8_t **pp, const uint8_t *end, uint32_t field, int wt, int depth) {
    const uint8_t *start;
    size_t len;
    uint64_t v;
    switch (wt) {
    case WT_VARINT:
        return read_varint(s, pp, end, &v);
    case WT_FIXED64:
        if (end - *pp < 8) return fail(s, *pp, "truncated fixed64");
        *pp += 8;
        return 0;
    case WT_LEN:
        return read_len(s, pp, end, &start, &len);
    case WT_FIXED32:
        if (end - *pp < 4) return fail(s, *pp, "truncated fixed32");
        *pp += 4;
        return 0;
    case WT_START_GROUP:
        if (depth + 1 > MAX_DEPTH) return fail(s, *pp, "nesting deeper than 100");
        for (;;) {
            uint32_t f;
            int w;
            if (*pp >= end) return fail(s, *pp, "group without its end tag");
            const uint8_t *tag_at = *pp;
            if (read_tag_any(s, pp, end, &f, &w) < 0) return -1;
            if (w == WT_END_GROUP) {
                if (f != field) return fail(s, tag_at, "end-group tag of another group");
                return 0;
            }
            if (skip_field(s, pp, end, f, w, depth + 1) < 0) return -1;
        }
    case WT_END_GROUP:
        return fail(s, *pp, "end-group tag outside a group");
    default:
        return fail(s, *pp, "invalid wire type (6 or 7)");
    }
}

/* ---------------------------------------------------------------- messages */

/* Depths: request 0, ResourceMetrics 1, ScopeMetrics 2, Metric 3, Gauge/Sum 4, NumberDataPoint 5. */

static int scan_point(Scan *s, const uint8_t *p, const uint8_t *end, int32_t metric) {
    if (grow_points(s) < 0) return -1;
    const uint8_t *msg = p;
    uint64_t start = 0, time = 0, flags = 0, raw_value = 0;
    int value_kind = VALUE_NONE;
    uint32_t attrs = 0, exemplars = 0;
    uint64_t attr_hash = s->seed;
    const uint8_t *attr_first = NULL, *attr_end = NULL;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_FIXED64 && (field == POINT_START_TIME || field == POINT_TIME || field == POINT_AS_DOUBLE ||
                                 field == POINT_AS_INT)) {
            uint64_t v;
            if (read_fixed64(s, &p, end, &v) < 0) return -1;
            if (field == POINT_START_TIME) {
                start = v;
            } else if (field == POINT_TIME) {
                time = v;
            } else {
                raw_value = v;
                value_kind = field == POINT_AS_DOUBLE ? VALUE_DOUBLE : VALUE_INT;
            }
        } else if (wt == WT_LEN && field == POINT_ATTRIBUTES) {
            const uint8_t *kv;
            size_t len;
            if (read_len(s, &p, end, &kv, &len) < 0) return -1;
            attr_hash = xxh64(kv, len, attr_hash);
            if (attr_first == NULL) attr_first = tag_at;
            attr_end = p;
            attrs++;
        } else if (wt == WT_LEN && field == POINT_EXEMPLARS) {
            const uint8_t *ex;
            size_t len;
            if (read_len(s, &p, end, &ex, &len) < 0) return -1;
            exemplars++;
        } else if (wt == WT_VARINT && field == POINT_FLAGS) {
            if (read_varint(s, &p, end, &flags) < 0) return -1;
        } else if (skip_field(s, &p, end, field, wt, 5) < 0) {
            return -1;
        }
    }
    double value = 0.0;
    if (value_kind == VALUE_DOUBLE)
        memcpy(&value, &raw_value, 8);
    else if (value_kind == VALUE_INT)
        value = (double)(int64_t)raw_value;
    size_t i = s->npoints++;
    VEC_AT(s->points[PC_METRIC], int32_t, i) = metric;
    VEC_AT(s->points[PC_START], uint64_t, i) = start;
    VEC_AT(s->points[PC_TIME], uint64_t, i) = time;
    VEC_AT(s->points[PC_VALUE], double, i) = value;
    VEC_AT(s->points[PC_VALUE_KIND], uint8_t, i) = (uint8_t)value_kind;
    VEC_AT(s->points[PC_FLAGS], uint32_t, i) = (uint32_t)flags;
    VEC_AT(s->points[PC_ATTR_COUNT], uint32_t, i) = attrs;
    VEC_AT(s->points[PC_ATTR_HASH], uint64_t, i) = xxh_u64(attrs, attr_hash);
    VEC_AT(s->points[PC_ATTR_OFFSET], int64_t, i) = (int64_t)((attr_first ? attr_first : msg) - s->base);
    VEC_AT(s->points[PC_ATTR_LENGTH], int64_t, i) = attr_first ? (int64_t)(attr_end - attr_first) : 0;
    VEC_AT(s->points[PC_EXEMPLARS], uint32_t, i) = exemplars;
    VEC_AT(s->points[PC_POINT_OFFSET], int64_t, i) = (int64_t)(msg - s->base);
    VEC_AT(s->points[PC_POINT_LENGTH], int64_t, i) = (int64_t)(end - msg);
    return 0;
}

/* Gauge or Sum: data points (field 1 of both), and a Sum's temporality and monotonicity. */
static int scan_numbers_message(Scan *s, const uint8_t *p, const uint8_t *end, int32_t metric, int is_sum) {
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && field == GAUGE_DATA_POINTS) {
            const uint8_t *sub;
            size_t len;
            if (read_len(s, &p, end, &sub, &len) < 0) return -1;
            if (scan_point(s, sub, sub + len, metric) < 0) return -1;
        } else if (is_sum && wt == WT_VARINT &&
                   (field == SUM_AGGREGATION_TEMPORALITY || field == SUM_IS_MONOTONIC)) {
            uint64_t v;
            if (read_varint(s, &p, end, &v) < 0) return -1;
            MetricRow *m = &VEC_AT(s->metrics, MetricRow, metric);
            if (field == SUM_AGGREGATION_TEMPORALITY)
                m->temporality = (int32_t)(uint32_t)v; /* enums are int32: upper bits dropped */
            else
                m->monotonic = v != 0;
        } else if (skip_field(s, &p, end, field, wt, 4) < 0) {
            return -1;
        }
    }
    return 0;
}

static int data_kind(uint32_t field) {
    switch (field) {
    case METRIC_GAUGE: return KIND_GAUGE;
    case METRIC_SUM: return KIND_SUM;
    case METRIC_HISTOGRAM: return KIND_HISTOGRAM;
    case METRIC_EXPONENTIAL_HISTOGRAM: return KIND_EXPONENTIAL_HISTOGRAM;
    case METRIC_SUMMARY: return KIND_SUMMARY;
    default: return KIND_NONE;
    }
}

static int scan_metric(Scan *s, const uint8_t *p, const uint8_t *end, int32_t scope) {
    MetricRow row;
    memset(&row, 0, sizeof(row));
    row.scope = scope;
    row.message.offset = (int64_t)(p - s->base);
    row.message.length = (int64_t)(end - p);
    row.first_point = (int64_t)s->npoints;
    int32_t index = (int32_t)s->metrics.size;
    if (push(s, &s->metrics, &row) < 0) return -1;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        int kind = data_kind(field);
        if (wt == WT_LEN && (field == METRIC_NAME || field == METRIC_DESCRIPTION || field == METRIC_UNIT)) {
            const uint8_t *text;
            size_t len;
            if (read_len(s, &p, end, &text, &len) < 0) return -1;
            MetricRow *m = &VEC_AT(s->metrics, MetricRow, index);
            Span *span = field == METRIC_NAME ? &m->name : (field == METRIC_DESCRIPTION ? &m->description : &m->unit);
            span->offset = (int64_t)(text - s->base);
            span->length = (int64_t)len;
        } else if (wt == WT_LEN && kind != KIND_NONE) {
            const uint8_t *sub;
            size_t len;
            if (read_len(s, &p, end, &sub, &len) < 0) return -1;
            MetricRow *m = &VEC_AT(s->metrics, MetricRow, index);
            if (m->kind != kind) {
                /* Another member of the oneof replaces the one before, its points included; the same
                 * member again is merged (points appended, scalars overwritten). */
                s->npoints = (size_t)m->first_point;
                m->kind = kind;
                m->temporality = 0;
                m->monotonic = 0;
            }
            if ((kind == KIND_GAUGE || kind == KIND_SUM) &&
                scan_numbers_message(s, sub, sub + len, index, kind == KIND_SUM) < 0)
                return -1;
        } else if (skip_field(s, &p, end, field, wt, 3) < 0) {
            return -1;
        }
    }
    MetricRow *m = &VEC_AT(s->metrics, MetricRow, index);
    m->points = (int64_t)s->npoints - m->first_point;
    return 0;
}

static int scan_scope_metrics(Scan *s, const uint8_t *p, const uint8_t *end, int32_t resource) {
    int32_t index = (int32_t)s->scopes.size;
    ScopeRow row = {resource, 0};
    if (push(s, &s->scopes, &row) < 0) return -1;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && (field == SCOPE_METRICS_SCOPE || field == SCOPE_METRICS_METRICS)) {
            const uint8_t *sub;
            size_t len;
            if (read_len(s, &p, end, &sub, &len) < 0) return -1;
            if (field == SCOPE_METRICS_SCOPE) {
                Part part = {index, {(int64_t)(sub - s->base), (int64_t)len}};
                if (push(s, &s->scope_parts, &part) < 0) return -1;
            } else if (scan_metric(s, sub, sub + len, index) < 0) {
                return -1;
            }
        } else if (skip_field(s, &p, end, field, wt, 2) < 0) {
            return -1;
        }
    }
    return 0;
}

static int scan_resource_metrics(Scan *s, const uint8_t *p, const uint8_t *end) {
    int32_t index = (int32_t)s->resource_hash.size;
    uint64_t zero = 0;
    if (push(s, &s->resource_hash, &zero) < 0) return -1;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && (field == RESOURCE_METRICS_RESOURCE || field == RESOURCE_METRICS_SCOPE_METRICS)) {
            const uint8_t *sub;
            size_t len;
            if (read_len(s, &p, end, &sub, &len) < 0) return -1;
            if (field == RESOURCE_METRICS_RESOURCE) {
                Part part = {index, {(int64_t)(sub - s->base), (int64_t)len}};
                if (push(s, &s->resource_parts, &part) < 0) return -1;
            } else if (scan_scope_metrics(s, sub, sub + len, index) < 0) {
                return -1;
            }
        } else if (skip_field(s, &p, end, field, wt, 1) < 0) {
            return -1;
        }
    }
    return 0;
}

static int scan_request(Scan *s, const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && field == REQUEST_RESOURCE_METRICS) {
            const uint8_t *sub;
            size_t len;
            if (read_len(s, &p, end, &sub, &len) < 0) return -1;
            if (scan_resource_metrics(s, sub, sub + len) < 0) return -1;
        } else if (skip_field(s, &p, end, field, wt, 0) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Hash of the parts (message fields) of each owner, in order, chained from base[owner]'s value. */
static void hash_parts(const Scan *s, const Vec *parts, uint64_t *hash, size_t owners, uint64_t tag) {
    size_t j = 0;
    for (size_t i = 0; i < owners; i++) {
        uint64_t h = xxh_u64(tag, hash[i]);
        uint64_t n = 0;
        for (; j < parts->size && (size_t)VEC_AT(*parts, Part, j).owner == i; j++, n++) {
            Span sp = VEC_AT(*parts, Part, j).span;
            h = xxh64(s->base + sp.offset, (size_t)sp.length, h);
        }
        hash[i] = xxh_u64(n, h);
    }
}

/* series_key of each point: its attribute hash mixed with the hash of resource, scope and metric name. */
static int series_keys(Scan *s) {
    size_t nres = s->resource_hash.size, nscope = s->scopes.size, nmetric = s->metrics.size;
    uint64_t *res = (uint64_t *)s->resource_hash.data;
    for (size_t i = 0; i < nres; i++) res[i] = s->seed;
    hash_parts(s, &s->resource_parts, res, nres, 1);
    uint64_t *scope = malloc((nscope ? nscope : 1) * sizeof(uint64_t));
    uint64_t *metric = malloc((nmetric ? nmetric : 1) * sizeof(uint64_t));
    if (scope == NULL || metric == NULL) {
        free(scope);
        free(metric);
        return out_of_memory(s);
    }
    for (size_t i = 0; i < nscope; i++) scope[i] = res[VEC_AT(s->scopes, ScopeRow, i).resource];
    hash_parts(s, &s->scope_parts, scope, nscope, 2);
    for (size_t i = 0; i < nmetric; i++) {
        const MetricRow *m = &VEC_AT(s->metrics, MetricRow, i);
        metric[i] = xxh64(s->base + m->name.offset, (size_t)m->name.length, xxh_u64(3, scope[m->scope]));
    }
    const int32_t *point_metric = (const int32_t *)s->points[PC_METRIC].data;
    const uint64_t *attr = (const uint64_t *)s->points[PC_ATTR_HASH].data;
    uint64_t *key = (uint64_t *)s->points[PC_SERIES_KEY].data;
    for (size_t i = 0; i < s->npoints; i++) key[i] = xxh_u64(attr[i], metric[point_metric[i]]);
    free(scope);
    free(metric);
    return 0;
}

/* ---------------------------------------------------------------- Python objects */

static int set_item(PyObject *dict, const char *key, PyObject *value) {
    if (value == NULL) return -1;
    int rc = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *column_bytes(const void *data, size_t count, size_t elem) {
    return PyBytes_FromStringAndSize(count ? (const char *)data : "", (Py_ssize_t)(count * elem));
}

/* One bytes object per owner: its message parts joined (parsing the join merges them, as protobuf does). */
static PyObject *joined_parts(const Scan *s, const Vec *parts, size_t owners) {
    PyObject *list = PyList_New((Py_ssize_t)owners);
    if (list == NULL) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < owners; i++) {
        size_t first = j, total = 0;
        for (; j < parts->size && (size_t)VEC_AT(*parts, Part, j).owner == i; j++)
            total += (size_t)VEC_AT(*parts, Part, j).span.length;
        PyObject *joined = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (joined == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        char *out = PyBytes_AS_STRING(joined);
        for (size_t k = first; k < j; k++) {
            Span sp = VEC_AT(*parts, Part, k).span;
            memcpy(out, s->base + sp.offset, (size_t)sp.length);
            out += sp.length;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, joined);
    }
    return list;
}

static PyObject *metric_texts(const Scan *s, size_t which) {
    size_t n = s->metrics.size;
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        const MetricRow *m = &VEC_AT(s->metrics, MetricRow, i);
        Span sp = which == 0 ? m->name : (which == 1 ? m->description : m->unit);
        PyObject *text = PyUnicode_DecodeUTF8((const char *)s->base + sp.offset, sp.length, NULL);
        if (text == NULL) {
            Py_DECREF(list);
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                static const char *const names[] = {"name", "description", "unit"};
                PyErr_Format(PyExc_ValueError, "malformed OTLP metrics request at byte %lld: metric %s is not UTF-8",
                             (long long)sp.offset, names[which]);
            }
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, text);
    }
    return list;
}

static PyObject *metric_column(const Scan *s, size_t which) {
    size_t n = s->metrics.size;
    size_t elem = which == 3 ? 1 : (which <= 2 ? 4 : 8);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * elem));
    if (out == NULL) return NULL;
    char *dst = PyBytes_AS_STRING(out);
    for (size_t i = 0; i < n; i++) {
        const MetricRow *m = &VEC_AT(s->metrics, MetricRow, i);
        int32_t i32;
        int64_t i64;
        uint8_t u8;
        switch (which) {
        case 0: i32 = m->scope; memcpy(dst + i * 4, &i32, 4); break;
        case 1: i32 = m->kind; memcpy(dst + i * 4, &i32, 4); break;
        case 2: i32 = m->temporality; memcpy(dst + i * 4, &i32, 4); break;
        case 3: u8 = m->monotonic; dst[i] = (char)u8; break;
        case 4: i64 = m->message.offset; memcpy(dst + i * 8, &i64, 8); break;
        case 5: i64 = m->message.length; memcpy(dst + i * 8, &i64, 8); break;
        case 6: i64 = m->first_point; memcpy(dst + i * 8, &i64, 8); break;
        default: i64 = m->points; memcpy(dst + i * 8, &i64, 8); break;
        }
    }
    return out;
}

static const char *const METRIC_COLUMNS[] = {"metric_scope", "metric_kind", "metric_temporality", "metric_monotonic",
                                             "metric_offset", "metric_length", "metric_first_point",
                                             "metric_points"};

static PyObject *build_result(const Scan *s) {
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    if (set_item(out, "points", PyLong_FromSize_t(s->npoints)) < 0) goto error;
    for (int c = 0; c < PC_COUNT; c++)
        if (set_item(out, POINT_COLUMNS[c], column_bytes(s->points[c].data, s->npoints, POINT_SIZES[c])) < 0)
            goto error;
    if (set_item(out, "resources", joined_parts(s, &s->resource_parts, s->resource_hash.size)) < 0) goto error;
    if (set_item(out, "scopes", joined_parts(s, &s->scope_parts, s->scopes.size)) < 0) goto error;
    PyObject *scope_resource = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(s->scopes.size * 4));
    if (scope_resource == NULL) goto error;
    for (size_t i = 0; i < s->scopes.size; i++)
        memcpy(PyBytes_AS_STRING(scope_resource) + i * 4, &VEC_AT(s->scopes, ScopeRow, i).resource, 4);
    if (set_item(out, "scope_resource", scope_resource) < 0) goto error;
    if (set_item(out, "metric_name", metric_texts(s, 0)) < 0) goto error;
    if (set_item(out, "metric_description", metric_texts(s, 1)) < 0) goto error;
    if (set_item(out, "metric_unit", metric_texts(s, 2)) < 0) goto error;
    for (size_t c = 0; c < sizeof(METRIC_COLUMNS) / sizeof(METRIC_COLUMNS[0]); c++)
        if (set_item(out, METRIC_COLUMNS[c], metric_column(s, c)) < 0) goto error;
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------- module */

PyDoc_STRVAR(scan_numbers_doc,
             "scan_numbers(buf, seed=0, /)\n--\n\n"
             "Gauge and sum data points of a serialized ExportMetricsServiceRequest as a dict of column\n"
             "bytes and lists; see otel_audio.receiver.fastscan. Raises ValueError on malformed input.");

static PyObject *scan_numbers(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "scan_numbers(buf, seed=0) takes 1 or 2 positional arguments");
        return NULL;
    }
    uint64_t seed = 0;
    if (nargs == 2) {
        seed = PyLong_AsUnsignedLongLongMask(args[1]);
        if (seed == (uint64_t)-1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    Scan s;
    const uint8_t *base = (const uint8_t *)view.buf;
    scan_init(&s, base, seed);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = scan_request(&s, base, base + view.len);
    if (rc == 0) rc = series_keys(&s);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (rc < 0) {
        if (s.nomem)
            PyErr_NoMemory();
        else
            PyErr_Format(PyExc_ValueError, "malformed OTLP metrics request at byte %lld: %s", (long long)s.err_offset,
                         s.err_msg);
    } else {
        result = build_result(&s);
    }
    scan_free(&s);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(xxh64_doc, "xxh64(data, seed=0, /)\n--\n\nXXH64 of a bytes-like object (for tests).");

static PyObject *py_xxh64(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "xxh64(data, seed=0) takes 1 or 2 positional arguments");
        return NULL;
    }
    uint64_t seed = 0;
    if (nargs == 2) {
        seed = PyLong_AsUnsignedLongLongMask(args[1]);
        if (seed == (uint64_t)-1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t h = xxh64((const uint8_t *)view.buf, (size_t)view.len, seed);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef methods[] = {
    {"scan_numbers", (PyCFunction)(void (*)(void))scan_numbers, METH_FASTCALL, scan_numbers_doc},
    {"xxh64", (PyCFunction)(void (*)(void))py_xxh64, METH_FASTCALL, xxh64_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_otlp_scan",
    .m_doc = "Native scanner of OTLP metrics requests (see fastscan.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__otlp_scan(void) {
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "KIND_NONE", KIND_NONE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_GAUGE", KIND_GAUGE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SUM", KIND_SUM) < 0 ||
        PyModule_AddIntConstant(m, "KIND_HISTOGRAM", KIND_HISTOGRAM) < 0 ||
        PyModule_AddIntConstant(m, "KIND_EXPONENTIAL_HISTOGRAM", KIND_EXPONENTIAL_HISTOGRAM) < 0 ||
        PyModule_AddIntConstant(m, "KIND_SUMMARY", KIND_SUMMARY) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
