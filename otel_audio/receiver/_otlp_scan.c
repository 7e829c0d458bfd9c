/* Native scanner of serialized OTLP ExportMetricsServiceRequest messages: the hot path of metric ingest
 * (and, in the traces section below, of ExportTraceServiceRequest messages: scan_spans).
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

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- field numbers */

enum {
    REQUEST_RESOURCE_METRICS = 1,
    RESOURCE_METRICS_RESOURCE = 1,
    RESOURCE_METRICS_SCOPE_METRICS = 2,
    RESOURCE_METRICS_SCHEMA_URL = 3,
    SCOPE_METRICS_SCOPE = 1,
    SCOPE_METRICS_METRICS = 2,
    SCOPE_METRICS_SCHEMA_URL = 3,
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

static int utf8_valid(const uint8_t *p, size_t n);

/* The top level of a message the scan hands to Python as a joined part (Resource, scope): each
 * occurrence must be well formed on its own, as protobuf parses it, since two occurrences
 * concatenated can read well where either alone does not (a length running into the next). */
static int check_fields(Scan *s, const uint8_t *p, const uint8_t *end, int depth) {
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(s, &p, end, &field, &wt) < 0) return -1;
        if (skip_field(s, &p, end, field, wt, depth) < 0) return -1;
    }
    return 0;
}

/* A string field the scan does not keep (schema_url) is still refused when it is not UTF-8, as
 * protobuf refuses it; so is every occurrence of a repeated metric name, not only the last. */
static int skip_string(Scan *s, const uint8_t **pp, const uint8_t *end) {
    const uint8_t *text;
    size_t len;
    if (read_len(s, pp, end, &text, &len) < 0) return -1;
    if (!utf8_valid(text, len)) return fail(s, text, "string field is not UTF-8");
    return 0;
}

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
            if (!utf8_valid(text, len))
                return fail(s, text,
                            field == METRIC_NAME ? "metric name is not UTF-8"
                                                 : (field == METRIC_DESCRIPTION ? "metric description is not UTF-8"
                                                                                : "metric unit is not UTF-8"));
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
                if (check_fields(s, sub, sub + len, 3) < 0) return -1;
                Part part = {index, {(int64_t)(sub - s->base), (int64_t)len}};
                if (push(s, &s->scope_parts, &part) < 0) return -1;
            } else if (scan_metric(s, sub, sub + len, index) < 0) {
                return -1;
            }
        } else if (wt == WT_LEN && field == SCOPE_METRICS_SCHEMA_URL) {
            if (skip_string(s, &p, end) < 0) return -1;
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
                if (check_fields(s, sub, sub + len, 2) < 0) return -1;
                Part part = {index, {(int64_t)(sub - s->base), (int64_t)len}};
                if (push(s, &s->resource_parts, &part) < 0) return -1;
            } else if (scan_scope_metrics(s, sub, sub + len, index) < 0) {
                return -1;
            }
        } else if (wt == WT_LEN && field == RESOURCE_METRICS_SCHEMA_URL) {
            if (skip_string(s, &p, end) < 0) return -1;
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

/* ================================================================ traces
 *
 * scan_spans(buf) walks a serialized ExportTraceServiceRequest and returns the accepted spans as
 * columns (otel_audio/receiver/decode_spans_fast.py reads them): fixed-width fields as packed
 * arrays, every string field as Arrow string buffers (int32 offsets, UTF-8 data), ids already in
 * lower-case hex, and attributes, events and links already written as the canonical JSON of
 * otel_audio.receiver.otlp_values (keys sorted by code point, a repeated key's last value, compact
 * separators, non-ASCII kept, float repr, bytes as base64). Spans that decode_spans refuses are
 * returned by location, for Python to name the problem. Resources and scopes are returned
 * serialized, one joined bytes object each, as scan_numbers does.
 *
 * The walk checks everything protobuf checks in the parts it turns into columns (structure, the
 * nesting limit), so a request it accepts is one protobuf accepts. What it does not reproduce
 * itself -- a string that is not UTF-8 (protobuf refuses it), a message member of AnyValue or
 * KeyValue sent twice (protobuf merges the two), offsets beyond int32 -- makes it return None:
 * the caller then decodes the request with protobuf and the reference decoder. The walk needs the
 * GIL (floats are written by Python's repr); it runs with it held.
 */

enum {
    REQUEST_RESOURCE_SPANS = 1,
    RESOURCE_SPANS_RESOURCE = 1,
    RESOURCE_SPANS_SCOPE_SPANS = 2,
    RESOURCE_SPANS_SCHEMA_URL = 3,
    SCOPE_SPANS_SCOPE = 1,
    SCOPE_SPANS_SPANS = 2,
    SCOPE_SPANS_SCHEMA_URL = 3,
    SPAN_TRACE_ID = 1,
    SPAN_SPAN_ID = 2,
    SPAN_TRACE_STATE = 3,
    SPAN_PARENT_SPAN_ID = 4,
    SPAN_NAME = 5,
    SPAN_KIND = 6,
    SPAN_START_TIME = 7,
    SPAN_END_TIME = 8,
    SPAN_ATTRIBUTES = 9,
    SPAN_EVENTS = 11,
    SPAN_LINKS = 13,
    SPAN_STATUS = 15,
    SPAN_FLAGS = 16,
    STATUS_MESSAGE = 2,
    STATUS_CODE = 3,
    EVENT_TIME = 1,
    EVENT_NAME = 2,
    EVENT_ATTRIBUTES = 3,
    LINK_TRACE_ID = 1,
    LINK_SPAN_ID = 2,
    LINK_TRACE_STATE = 3,
    LINK_ATTRIBUTES = 4,
    KEY_VALUE_KEY = 1,
    KEY_VALUE_VALUE = 2,
    ANY_STRING = 1,
    ANY_BOOL = 2,
    ANY_INT = 3,
    ANY_DOUBLE = 4,
    ANY_ARRAY = 5,
    ANY_KVLIST = 6,
    ANY_BYTES = 7,
    ANY_STRING_STRINDEX = 8,
    ARRAY_VALUES = 1,
    KVLIST_VALUES = 1,
    RESOURCE_ATTRIBUTES = 1,
    RESOURCE_ENTITY_REFS = 3,
    SCOPE_ATTRIBUTES = 3,
};

/* Message types the depth check walks into (resources and scopes; span contents are walked by the
 * JSON writers). M_LEAF: a message without message fields (EntityRef). */
enum { M_LEAF, M_RESOURCE, M_SCOPE, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY_VALUE, M_KVLIST };

#define FALLBACK (-2) /* return code: leave the request to protobuf and the reference decoder */

/* Arrow string column being built: int32 offsets (one more than strings) and UTF-8 data. */
typedef struct {
    Vec offsets;
    Vec data;
} StrCol;

enum { SC_TRACE_ID, SC_SPAN_ID, SC_PARENT_SPAN_ID, SC_TRACE_STATE, SC_NAME, SC_STATUS_MESSAGE, SC_ATTRIBUTES,
       SC_EVENTS, SC_LINKS, SC_COUNT };
static const char *const STRING_COLUMNS[SC_COUNT] = {
    "trace_id", "span_id", "parent_span_id", "trace_state", "name", "status_message", "attributes", "events", "links",
};

enum { FC_SCOPE, FC_KIND, FC_START, FC_END, FC_STATUS_CODE, FC_FLAGS, FC_COUNT };
static const char *const FIXED_COLUMNS[FC_COUNT] = {"scope", "kind", "start_time_unix_nano", "end_time_unix_nano",
                                                    "status_code", "flags"};
static const size_t FIXED_SIZES[FC_COUNT] = {4, 1, 8, 8, 1, 4};

typedef struct {
    int64_t offset, length;    /* the serialized Span */
    int32_t resource, scope, span; /* its place: resource_spans[resource].scope_spans[scope].spans[span] */
} Refused;

typedef struct {
    Scan core; /* wire-format reading and errors */
    size_t nspans;
    Vec fixed[FC_COUNT];
    StrCol strings[SC_COUNT];
    Vec refused;        /* Refused */
    Vec resource_parts; /* Part */
    size_t nresources;
    Vec scope_parts;    /* Part */
    Vec scope_resource; /* int32 per scope */
    Vec lists[3];       /* Span: attributes, events and links of the span being read (reused) */
    Vec event_kvs;      /* Span: attributes of the event or link being written (reused) */
    Vec scratch;        /* char: JSON of refused spans, checked then dropped */
    Vec sort_tmp;       /* char: an object's values while its keys are sorted */
} SpanScan;

static void span_scan_init(SpanScan *t, const uint8_t *base) {
    memset(t, 0, sizeof(*t));
    t->core.base = base;
    for (int c = 0; c < FC_COUNT; c++) t->fixed[c].elem = FIXED_SIZES[c];
    for (int c = 0; c < SC_COUNT; c++) {
        t->strings[c].offsets.elem = 4;
        t->strings[c].data.elem = 1;
    }
    t->refused.elem = sizeof(Refused);
    t->resource_parts.elem = sizeof(Part);
    t->scope_parts.elem = sizeof(Part);
    t->scope_resource.elem = 4;
    for (int k = 0; k < 3; k++) t->lists[k].elem = sizeof(Span);
    t->event_kvs.elem = sizeof(Span);
    t->scratch.elem = 1;
    t->sort_tmp.elem = 1;
}

static void span_scan_free(SpanScan *t) {
    for (int c = 0; c < FC_COUNT; c++) free(t->fixed[c].data);
    for (int c = 0; c < SC_COUNT; c++) {
        free(t->strings[c].offsets.data);
        free(t->strings[c].data.data);
    }
    free(t->refused.data);
    free(t->resource_parts.data);
    free(t->scope_parts.data);
    free(t->scope_resource.data);
    for (int k = 0; k < 3; k++) free(t->lists[k].data);
    free(t->event_kvs.data);
    free(t->scratch.data);
    free(t->sort_tmp.data);
}

typedef struct {
    const uint8_t *ptr;
    size_t len;
} Bytes;

/* ---------------------------------------------------------------- output text */

static inline int out_bytes(SpanScan *t, Vec *out, const void *src, size_t n) {
    if (vec_reserve(out, out->size + n) < 0) return out_of_memory(&t->core);
    memcpy(out->data + out->size, src, n);
    out->size += n;
    return 0;
}

static inline int out_char(SpanScan *t, Vec *out, char c) { return out_bytes(t, out, &c, 1); }

static int out_str(SpanScan *t, Vec *out, const char *text) { return out_bytes(t, out, text, strlen(text)); }

static const char HEX[] = "0123456789abcdef";

static int out_hex(SpanScan *t, Vec *out, const uint8_t *p, size_t n) {
    if (vec_reserve(out, out->size + 2 * n) < 0) return out_of_memory(&t->core);
    char *dst = out->data + out->size;
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = HEX[p[i] >> 4];
        dst[2 * i + 1] = HEX[p[i] & 15];
    }
    out->size += 2 * n;
    return 0;
}

/* Strict UTF-8, as protobuf checks string fields: no overlong forms, surrogates, or code points
 * beyond U+10FFFF. */
static int utf8_valid(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t need;
        uint32_t min, cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1, min = 0x80, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, min = 0x800, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return 0;
        }
        if ((size_t)(end - p) <= need) return 0;
        for (size_t i = 1; i <= need; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        p += need + 1;
    }
    return 1;
}

/* A protobuf string field's value: FALLBACK when it is not UTF-8 (protobuf refuses the request). */
static inline int check_utf8(const uint8_t *p, size_t n) { return utf8_valid(p, n) ? 0 : FALLBACK; }

/* A JSON string as Python's json module writes it with ensure_ascii=False. */
static int out_json_string(SpanScan *t, Vec *out, const uint8_t *p, size_t n) {
    if (!utf8_valid(p, n)) return FALLBACK;
    if (vec_reserve(out, out->size + n + 2) < 0) return out_of_memory(&t->core);
    out->data[out->size++] = '"';
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (out_bytes(t, out, p + run, i - run) < 0) return -1;
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = HEX[c >> 4], esc[5] = HEX[c & 15];
            len = 6;
        }
        if (out_bytes(t, out, esc, len) < 0) return -1;
    }
    if (out_bytes(t, out, p + run, n - run) < 0) return -1;
    return out_char(t, out, '"');
}

static int out_base64(SpanScan *t, Vec *out, const uint8_t *p, size_t n) {
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (vec_reserve(out, out->size + 4 * ((n + 2) / 3) + 2) < 0) return out_of_memory(&t->core);
    char *dst = out->data + out->size;
    *dst++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *dst++ = B64[v >> 18], *dst++ = B64[(v >> 12) & 63], *dst++ = B64[(v >> 6) & 63], *dst++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *dst++ = B64[v >> 18], *dst++ = B64[(v >> 12) & 63], *dst++ = '=', *dst++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        *dst++ = B64[v >> 18], *dst++ = B64[(v >> 12) & 63], *dst++ = B64[(v >> 6) & 63], *dst++ = '=';
    }
    *dst++ = '"';
    out->size = (size_t)(dst - out->data);
    return 0;
}

/* A double as otlp_values.any_value and json write it: repr, non-finite values as strings. */
static int out_double(SpanScan *t, Vec *out, double v) {
    if (isnan(v)) return out_str(t, out, "\"NaN\"");
    if (isinf(v)) return out_str(t, out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    char *text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL) return out_of_memory(&t->core);
    int rc = out_str(t, out, text);
    PyMem_Free(text);
    return rc;
}

static int out_u64(SpanScan *t, Vec *out, uint64_t v, int negative) {
    char buf[24];
    int n = negative ? snprintf(buf, sizeof(buf), "-%llu", (unsigned long long)v)
                     : snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    return out_bytes(t, out, buf, (size_t)n);
}

static int out_i64(SpanScan *t, Vec *out, int64_t v) {
    return v < 0 ? out_u64(t, out, (uint64_t)0 - (uint64_t)v, 1) : out_u64(t, out, (uint64_t)v, 0);
}

/* ---------------------------------------------------------------- attribute values as JSON */

static int depth_ok(SpanScan *t, const uint8_t *at, int depth) {
    return depth > MAX_DEPTH ? fail(&t->core, at, "nesting deeper than 100") : 0;
}

static int json_key_values(SpanScan *t, Vec *out, const Span *kvs, size_t n, int depth);

/* An AnyValue at ``depth``: the last member of its oneof on the wire, or null. */
static int json_any_value(SpanScan *t, Vec *out, const uint8_t *p, const uint8_t *end, int depth) {
    if (depth_ok(t, p, depth) < 0) return -1;
    size_t start = out->size;
    int messages_seen = 0; /* a message member twice would be merged by protobuf: left to it */
    int rc;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(&t->core, &p, end, &field, &wt) < 0) return -1;
        uint64_t v;
        const uint8_t *sub;
        size_t len;
        if (wt == WT_LEN && (field == ANY_STRING || field == ANY_ARRAY || field == ANY_KVLIST || field == ANY_BYTES)) {
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            out->size = start;
            if (field == ANY_STRING) {
                rc = out_json_string(t, out, sub, len);
            } else if (field == ANY_BYTES) {
                rc = out_base64(t, out, sub, len);
            } else if (messages_seen++) {
                return FALLBACK;
            } else if (field == ANY_ARRAY) {
                if (depth_ok(t, sub, depth + 1) < 0) return -1;
                if ((rc = out_char(t, out, '[')) < 0) return rc;
                int first = 1;
                const uint8_t *q = sub, *qend = sub + len;
                while (q < qend && rc == 0) {
                    uint32_t f;
                    int w;
                    if (read_tag(&t->core, &q, qend, &f, &w) < 0) return -1;
                    if (w == WT_LEN && f == ARRAY_VALUES) {
                        const uint8_t *item;
                        size_t item_len;
                        if (read_len(&t->core, &q, qend, &item, &item_len) < 0) return -1;
                        if (!first && (rc = out_char(t, out, ',')) < 0) return rc;
                        first = 0;
                        rc = json_any_value(t, out, item, item + item_len, depth + 2);
                    } else {
                        rc = skip_field(&t->core, &q, qend, f, w, depth + 1);
                    }
                }
                if (rc == 0) rc = out_char(t, out, ']');
            } else {
                if (depth_ok(t, sub, depth + 1) < 0) return -1;
                Vec kvs = {NULL, 0, 0, sizeof(Span)};
                const uint8_t *q = sub, *qend = sub + len;
                rc = 0;
                while (q < qend && rc == 0) {
                    uint32_t f;
                    int w;
                    if ((rc = read_tag(&t->core, &q, qend, &f, &w)) < 0) break;
                    if (w == WT_LEN && f == KVLIST_VALUES) {
                        const uint8_t *item;
                        size_t item_len;
                        if ((rc = read_len(&t->core, &q, qend, &item, &item_len)) < 0) break;
                        Span sp = {(int64_t)(item - t->core.base), (int64_t)item_len};
                        rc = push(&t->core, &kvs, &sp);
                    } else {
                        rc = skip_field(&t->core, &q, qend, f, w, depth + 1);
                    }
                }
                if (rc == 0) rc = json_key_values(t, out, (const Span *)kvs.data, kvs.size, depth + 2);
                free(kvs.data);
            }
            if (rc < 0) return rc;
        } else if (wt == WT_VARINT && (field == ANY_BOOL || field == ANY_INT || field == ANY_STRING_STRINDEX)) {
            if (read_varint(&t->core, &p, end, &v) < 0) return -1;
            out->size = start;
            if (field == ANY_BOOL)
                rc = out_str(t, out, v ? "true" : "false");
            else if (field == ANY_INT)
                rc = out_i64(t, out, (int64_t)v);
            else
                rc = out_str(t, out, "null"); /* any_value has no case for string_value_strindex */
            if (rc < 0) return rc;
        } else if (wt == WT_FIXED64 && field == ANY_DOUBLE) {
            if (read_fixed64(&t->core, &p, end, &v) < 0) return -1;
            double d;
            memcpy(&d, &v, 8);
            out->size = start;
            if ((rc = out_double(t, out, d)) < 0) return rc;
        } else if (skip_field(&t->core, &p, end, field, wt, depth) < 0) {
            return -1;
        }
    }
    if (out->size == start) return out_str(t, out, "null");
    return 0;
}

typedef struct {
    const uint8_t *key;
    size_t key_len;
    size_t value_at, value_len; /* in SpanScan.sort_tmp */
    size_t order;
} Entry;

static int entry_cmp(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* KeyValues (payload spans, each a message at ``depth``) as one JSON object: keys sorted (UTF-8 byte
 * order is code point order, Python's), a repeated key keeping its last value. */
static int json_key_values(SpanScan *t, Vec *out, const Span *kvs, size_t n, int depth) {
    if (n == 0) return out_str(t, out, "{}");
    Entry *entries = malloc(n * sizeof(Entry));
    if (entries == NULL) return out_of_memory(&t->core);
    size_t start = out->size;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const uint8_t *p = t->core.base + kvs[i].offset, *end = p + kvs[i].length;
        if ((rc = depth_ok(t, p, depth)) < 0) break;
        const uint8_t *key = (const uint8_t *)"", *value = NULL;
        size_t key_len = 0, value_len = 0;
        while (p < end) {
            uint32_t field;
            int wt;
            if ((rc = read_tag(&t->core, &p, end, &field, &wt)) < 0) break;
            if (wt == WT_LEN && (field == KEY_VALUE_KEY || field == KEY_VALUE_VALUE)) {
                const uint8_t *sub;
                size_t len;
                if ((rc = read_len(&t->core, &p, end, &sub, &len)) < 0) break;
                if (field == KEY_VALUE_KEY) {
                    if ((rc = check_utf8(sub, len)) < 0) break;
                    key = sub, key_len = len;
                } else if (value != NULL) {
                    rc = FALLBACK; /* merged by protobuf */
                    break;
                } else {
                    value = sub, value_len = len;
                }
            } else if ((rc = skip_field(&t->core, &p, end, field, wt, depth)) < 0) {
                break;
            }
        }
        if (rc < 0) break;
        size_t at = out->size;
        rc = value ? json_any_value(t, out, value, value + value_len, depth + 1) : out_str(t, out, "null");
        entries[i] = (Entry){key, key_len, at - start, out->size - at, i};
    }
    if (rc == 0) {
        /* The values were written in request order; write the object again in key order. */
        size_t written = out->size - start;
        t->sort_tmp.size = 0;
        rc = out_bytes(t, &t->sort_tmp, out->data + start, written);
        out->size = start;
        if (rc == 0) {
            qsort(entries, n, sizeof(Entry), entry_cmp);
            rc = out_char(t, out, '{');
            int first = 1;
            for (size_t i = 0; i < n && rc == 0; i++) {
                const Entry *e = &entries[i];
                if (i + 1 < n && entries[i + 1].key_len == e->key_len && !memcmp(entries[i + 1].key, e->key, e->key_len))
                    continue; /* a later value of the same key wins */
                if (!first) rc = out_char(t, out, ',');
                first = 0;
                if (rc == 0) rc = out_json_string(t, out, e->key, e->key_len);
                if (rc == 0) rc = out_char(t, out, ':');
                if (rc == 0) rc = out_bytes(t, out, t->sort_tmp.data + e->value_at, e->value_len);
            }
            if (rc == 0) rc = out_char(t, out, '}');
        }
    }
    free(entries);
    return rc;
}

/* ---------------------------------------------------------------- events and links as JSON */

/* Reads an Event or Link (at ``depth``): its attribute KeyValues go to ``kvs``; ``fixed`` and
 * ``strings`` receive the other fields by number (last value wins). */
typedef struct {
    uint64_t time;
    const uint8_t *text[4];
    size_t text_len[4];
} Parts;

static int read_event_or_link(SpanScan *t, const uint8_t *p, const uint8_t *end, int depth, int is_link, Vec *kvs,
                              Parts *parts) {
    if (depth_ok(t, p, depth) < 0) return -1;
    uint32_t attributes_field = is_link ? LINK_ATTRIBUTES : EVENT_ATTRIBUTES;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(&t->core, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && field == attributes_field) {
            const uint8_t *sub;
            size_t len;
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            Span sp = {(int64_t)(sub - t->core.base), (int64_t)len};
            if (push(&t->core, kvs, &sp) < 0) return -1;
        } else if (wt == WT_LEN && (is_link ? (field == LINK_TRACE_ID || field == LINK_SPAN_ID ||
                                               field == LINK_TRACE_STATE)
                                            : field == EVENT_NAME)) {
            const uint8_t *sub;
            size_t len;
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            if (field == (is_link ? LINK_TRACE_STATE : EVENT_NAME) && check_utf8(sub, len) < 0) return FALLBACK;
            parts->text[field] = sub;
            parts->text_len[field] = len;
        } else if (!is_link && wt == WT_FIXED64 && field == EVENT_TIME) {
            if (read_fixed64(&t->core, &p, end, &parts->time) < 0) return -1;
        } else if (skip_field(&t->core, &p, end, field, wt, depth) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Span.events or Span.links (payload spans) as the JSON list decode_spans writes. */
static int json_events_or_links(SpanScan *t, Vec *out, const Span *items, size_t n, int is_link) {
    if (n == 0) return out_str(t, out, "[]");
    int rc = out_char(t, out, '[');
    Vec *kvs = &t->event_kvs;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const uint8_t *p = t->core.base + items[i].offset;
        Parts parts;
        memset(&parts, 0, sizeof(parts));
        kvs->size = 0;
        if ((rc = read_event_or_link(t, p, p + items[i].length, 4, is_link, kvs, &parts)) < 0) break;
        if (i) rc = out_char(t, out, ',');
        if (rc == 0) rc = out_str(t, out, "{\"attributes\":");
        if (rc == 0) rc = json_key_values(t, out, (const Span *)kvs->data, kvs->size, 5);
        if (is_link) {
            if (rc == 0) rc = out_str(t, out, ",\"span_id\":\"");
            if (rc == 0) rc = out_hex(t, out, parts.text[LINK_SPAN_ID], parts.text_len[LINK_SPAN_ID]);
            if (rc == 0) rc = out_str(t, out, "\",\"trace_id\":\"");
            if (rc == 0) rc = out_hex(t, out, parts.text[LINK_TRACE_ID], parts.text_len[LINK_TRACE_ID]);
            if (rc == 0) rc = out_str(t, out, "\",\"trace_state\":");
            if (rc == 0)
                rc = out_json_string(t, out, parts.text[LINK_TRACE_STATE] ? parts.text[LINK_TRACE_STATE]
                                                                            : (const uint8_t *)"",
                                     parts.text_len[LINK_TRACE_STATE]);
        } else {
            if (rc == 0) rc = out_str(t, out, ",\"name\":");
            if (rc == 0)
                rc = out_json_string(t, out, parts.text[EVENT_NAME] ? parts.text[EVENT_NAME] : (const uint8_t *)"",
                                     parts.text_len[EVENT_NAME]);
            if (rc == 0) rc = out_str(t, out, ",\"time_unix_nano\":");
            if (rc == 0) rc = out_u64(t, out, parts.time, 0);
        }
        if (rc == 0) rc = out_char(t, out, '}');
    }
    return rc == 0 ? out_char(t, out, ']') : rc;
}

/* ---------------------------------------------------------------- the depth check of resources and scopes */

static int child_type(int type, uint32_t field) {
    switch (type) {
    case M_RESOURCE: return field == RESOURCE_ATTRIBUTES ? M_KEY_VALUE : (field == RESOURCE_ENTITY_REFS ? M_LEAF : -1);
    case M_SCOPE: return field == SCOPE_ATTRIBUTES ? M_KEY_VALUE : -1;
    case M_KEY_VALUE: return field == KEY_VALUE_VALUE ? M_ANY_VALUE : -1;
    case M_ANY_VALUE: return field == ANY_ARRAY ? M_ARRAY_VALUE : (field == ANY_KVLIST ? M_KVLIST : -1);
    case M_ARRAY_VALUE: return field == ARRAY_VALUES ? M_ANY_VALUE : -1;
    case M_KVLIST: return field == KVLIST_VALUES ? M_KEY_VALUE : -1;
    default: return -1;
    }
}

/* Walks a message at ``depth`` and its message fields; Python parses it afterwards (from a slice,
 * where its own depth count starts again), so this is where the request's nesting limit holds. */
static int walk_message(SpanScan *t, const uint8_t *p, const uint8_t *end, int type, int depth) {
    if (depth_ok(t, p, depth) < 0) return -1;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(&t->core, &p, end, &field, &wt) < 0) return -1;
        int child = wt == WT_LEN ? child_type(type, field) : -1;
        if (child >= 0) {
            const uint8_t *sub;
            size_t len;
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            if (walk_message(t, sub, sub + len, child, depth + 1) < 0) return -1;
        } else if (skip_field(&t->core, &p, end, field, wt, depth) < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- spans */

/* Ends the string just written to a column (offsets must fit int32, else FALLBACK). */
static int end_string(SpanScan *t, StrCol *col) {
    if (col->data.size > 0x7fffffffULL) return FALLBACK;
    int32_t end = (int32_t)col->data.size;
    return push(&t->core, &col->offsets, &end);
}

static int column_text(SpanScan *t, int column, const uint8_t *p, size_t n) {
    StrCol *col = &t->strings[column];
    if (n && out_bytes(t, &col->data, p, n) < 0) return -1;
    return end_string(t, col);
}

static int column_hex(SpanScan *t, int column, const uint8_t *p, size_t n) {
    StrCol *col = &t->strings[column];
    if (out_hex(t, &col->data, p, n) < 0) return -1;
    return end_string(t, col);
}

static int is_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* The JSON of the span's attributes, events and links (t->lists) into their columns, or, for a refused
 * span, into the scratch buffer: checked as protobuf would, then dropped. */
static int span_json(SpanScan *t, int accepted) {
    for (int k = 0; k < 3; k++) {
        Vec *out = accepted ? &t->strings[SC_ATTRIBUTES + k].data : &t->scratch;
        const Span *items = (const Span *)t->lists[k].data;
        size_t n = t->lists[k].size;
        int rc = k == 0 ? json_key_values(t, out, items, n, 4) : json_events_or_links(t, out, items, n, k == 2);
        if (rc < 0) return rc;
        if (accepted && (rc = end_string(t, &t->strings[SC_ATTRIBUTES + k])) < 0) return rc;
        t->scratch.size = 0;
    }
    return 0;
}

static int scan_span(SpanScan *t, const uint8_t *p, const uint8_t *end, int32_t scope, Refused where) {
    const uint8_t *msg = p;
    Bytes ids[5] = {{NULL, 0}}; /* by field number: trace_id 1, span_id 2, trace_state 3, parent 4 */
    Bytes name = {NULL, 0}, message = {NULL, 0};
    int32_t kind = 0, code = 0;
    uint64_t start = 0, finish = 0;
    uint32_t flags = 0;
    Vec *lists = t->lists; /* attributes, events, links: payload spans */
    for (int k = 0; k < 3; k++) lists[k].size = 0;
    int rc = 0;
    while (p < end && rc == 0) {
        uint32_t field;
        int wt;
        if ((rc = read_tag(&t->core, &p, end, &field, &wt)) < 0) break;
        if (wt == WT_LEN && (field <= SPAN_NAME || field == SPAN_ATTRIBUTES || field == SPAN_EVENTS ||
                             field == SPAN_LINKS || field == SPAN_STATUS)) {
            const uint8_t *sub;
            size_t len;
            if ((rc = read_len(&t->core, &p, end, &sub, &len)) < 0) break;
            if (field == SPAN_TRACE_STATE || field == SPAN_NAME) {
                if ((rc = check_utf8(sub, len)) < 0) break;
            }
            if (field <= SPAN_PARENT_SPAN_ID) {
                ids[field] = (Bytes){sub, len};
            } else if (field == SPAN_NAME) {
                name = (Bytes){sub, len};
            } else if (field == SPAN_STATUS) {
                if ((rc = depth_ok(t, sub, 4)) < 0) break;
                const uint8_t *q = sub, *qend = sub + len;
                while (q < qend && rc == 0) {
                    uint32_t f;
                    int w;
                    if ((rc = read_tag(&t->core, &q, qend, &f, &w)) < 0) break;
                    if (w == WT_LEN && f == STATUS_MESSAGE) {
                        const uint8_t *text;
                        size_t text_len;
                        if ((rc = read_len(&t->core, &q, qend, &text, &text_len)) < 0) break;
                        if ((rc = check_utf8(text, text_len)) < 0) break;
                        message = (Bytes){text, text_len};
                    } else if (w == WT_VARINT && f == STATUS_CODE) {
                        uint64_t v;
                        if ((rc = read_varint(&t->core, &q, qend, &v)) < 0) break;
                        code = (int32_t)(uint32_t)v; /* enums are int32: upper bits dropped */
                    } else {
                        rc = skip_field(&t->core, &q, qend, f, w, 4);
                    }
                }
            } else {
                Span sp = {(int64_t)(sub - t->core.base), (int64_t)len};
                int k = field == SPAN_ATTRIBUTES ? 0 : (field == SPAN_EVENTS ? 1 : 2);
                rc = push(&t->core, &lists[k], &sp);
            }
        } else if (wt == WT_VARINT && field == SPAN_KIND) {
            uint64_t v;
            if ((rc = read_varint(&t->core, &p, end, &v)) < 0) break;
            kind = (int32_t)(uint32_t)v;
        } else if (wt == WT_FIXED64 && (field == SPAN_START_TIME || field == SPAN_END_TIME)) {
            uint64_t v;
            if ((rc = read_fixed64(&t->core, &p, end, &v)) < 0) break;
            if (field == SPAN_START_TIME)
                start = v;
            else
                finish = v;
        } else if (wt == WT_FIXED32 && field == SPAN_FLAGS) {
            if (end - p < 4) {
                rc = fail(&t->core, p, "truncated fixed32");
                break;
            }
            flags = le32(p);
            p += 4;
        } else {
            rc = skip_field(&t->core, &p, end, field, wt, 3);
        }
    }
    if (rc < 0) return rc;

    Bytes trace = ids[SPAN_TRACE_ID], span = ids[SPAN_SPAN_ID], parent = ids[SPAN_PARENT_SPAN_ID];
    int refused = trace.len != 16 || is_zero(trace.ptr, 16) || span.len != 8 || is_zero(span.ptr, 8) ||
                  (parent.len != 0 && parent.len != 8) || kind < 0 || kind > 5 || code < 0 || code > 2 ||
                  (start | finish) > (uint64_t)INT64_MAX;
    if ((rc = span_json(t, !refused)) < 0) return rc;
    if (refused) {
        where.offset = (int64_t)(msg - t->core.base);
        where.length = (int64_t)(end - msg);
        return push(&t->core, &t->refused, &where);
    }
    int8_t kind8 = (int8_t)kind, code8 = (int8_t)code;
    int64_t start64 = (int64_t)start, end64 = (int64_t)finish;
    if (push(&t->core, &t->fixed[FC_SCOPE], &scope) < 0 || push(&t->core, &t->fixed[FC_KIND], &kind8) < 0 ||
        push(&t->core, &t->fixed[FC_START], &start64) < 0 || push(&t->core, &t->fixed[FC_END], &end64) < 0 ||
        push(&t->core, &t->fixed[FC_STATUS_CODE], &code8) < 0 || push(&t->core, &t->fixed[FC_FLAGS], &flags) < 0)
        return -1;
    if ((rc = column_hex(t, SC_TRACE_ID, trace.ptr, 16)) < 0 || (rc = column_hex(t, SC_SPAN_ID, span.ptr, 8)) < 0)
        return rc;
    /* decode_spans writes an all-zero parent as no parent */
    int has_parent = parent.len == 8 && !is_zero(parent.ptr, 8);
    if ((rc = column_hex(t, SC_PARENT_SPAN_ID, parent.ptr, has_parent ? 8 : 0)) < 0) return rc;
    if ((rc = column_text(t, SC_TRACE_STATE, ids[SPAN_TRACE_STATE].ptr, ids[SPAN_TRACE_STATE].len)) < 0) return rc;
    if ((rc = column_text(t, SC_NAME, name.ptr, name.len)) < 0) return rc;
    if ((rc = column_text(t, SC_STATUS_MESSAGE, message.ptr, message.len)) < 0) return rc;
    t->nspans++;
    return 0;
}

static int scan_scope_spans(SpanScan *t, const uint8_t *p, const uint8_t *end, int32_t resource, int32_t scope_in_resource) {
    int32_t index = (int32_t)t->scope_resource.size;
    if (push(&t->core, &t->scope_resource, &resource) < 0) return -1;
    int32_t span_index = 0;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(&t->core, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && (field == SCOPE_SPANS_SCOPE || field == SCOPE_SPANS_SPANS || field == SCOPE_SPANS_SCHEMA_URL)) {
            const uint8_t *sub;
            size_t len;
            int rc;
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            if (field == SCOPE_SPANS_SCOPE) {
                if (walk_message(t, sub, sub + len, M_SCOPE, 3) < 0) return -1;
                Part part = {index, {(int64_t)(sub - t->core.base), (int64_t)len}};
                if (push(&t->core, &t->scope_parts, &part) < 0) return -1;
            } else if (field == SCOPE_SPANS_SCHEMA_URL) {
                if (check_utf8(sub, len) < 0) return FALLBACK;
            } else {
                if ((rc = depth_ok(t, sub, 3)) < 0) return rc;
                Refused where = {0, 0, resource, scope_in_resource, span_index++};
                if ((rc = scan_span(t, sub, sub + len, index, where)) < 0) return rc;
            }
        } else if (skip_field(&t->core, &p, end, field, wt, 2) < 0) {
            return -1;
        }
    }
    return 0;
}

static int scan_resource_spans(SpanScan *t, const uint8_t *p, const uint8_t *end) {
    int32_t index = (int32_t)t->nresources++;
    int32_t scopes = 0;
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(&t->core, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && (field == RESOURCE_SPANS_RESOURCE || field == RESOURCE_SPANS_SCOPE_SPANS ||
                             field == RESOURCE_SPANS_SCHEMA_URL)) {
            const uint8_t *sub;
            size_t len;
            int rc;
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            if (field == RESOURCE_SPANS_RESOURCE) {
                if (walk_message(t, sub, sub + len, M_RESOURCE, 2) < 0) return -1;
                Part part = {index, {(int64_t)(sub - t->core.base), (int64_t)len}};
                if (push(&t->core, &t->resource_parts, &part) < 0) return -1;
            } else if (field == RESOURCE_SPANS_SCHEMA_URL) {
                if (check_utf8(sub, len) < 0) return FALLBACK;
            } else if ((rc = scan_scope_spans(t, sub, sub + len, index, scopes++)) < 0) {
                return rc;
            }
        } else if (skip_field(&t->core, &p, end, field, wt, 1) < 0) {
            return -1;
        }
    }
    return 0;
}

static int scan_trace_request(SpanScan *t, const uint8_t *p, const uint8_t *end) {
    for (int c = 0; c < SC_COUNT; c++) {
        int32_t zero = 0;
        if (push(&t->core, &t->strings[c].offsets, &zero) < 0) return -1;
    }
    while (p < end) {
        uint32_t field;
        int wt;
        if (read_tag(&t->core, &p, end, &field, &wt) < 0) return -1;
        if (wt == WT_LEN && field == REQUEST_RESOURCE_SPANS) {
            const uint8_t *sub;
            size_t len;
            int rc;
            if (read_len(&t->core, &p, end, &sub, &len) < 0) return -1;
            if ((rc = scan_resource_spans(t, sub, sub + len)) < 0) return rc;
        } else if (skip_field(&t->core, &p, end, field, wt, 0) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *build_span_result(SpanScan *t) {
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    if (set_item(out, "spans", PyLong_FromSize_t(t->nspans)) < 0) goto error;
    for (int c = 0; c < FC_COUNT; c++)
        if (set_item(out, FIXED_COLUMNS[c], column_bytes(t->fixed[c].data, t->nspans, FIXED_SIZES[c])) < 0)
            goto error;
    for (int c = 0; c < SC_COUNT; c++) {
        StrCol *col = &t->strings[c];
        PyObject *pair = Py_BuildValue("(NN)", column_bytes(col->offsets.data, col->offsets.size, 4),
                                       column_bytes(col->data.data, col->data.size, 1));
        if (set_item(out, STRING_COLUMNS[c], pair) < 0) goto error;
    }
    if (set_item(out, "resources", joined_parts(&t->core, &t->resource_parts, t->nresources)) < 0) goto error;
    if (set_item(out, "scopes", joined_parts(&t->core, &t->scope_parts, t->scope_resource.size)) < 0) goto error;
    if (set_item(out, "scope_resource", column_bytes(t->scope_resource.data, t->scope_resource.size, 4)) < 0)
        goto error;
    PyObject *refused = PyList_New((Py_ssize_t)t->refused.size);
    if (set_item(out, "refused", refused) < 0) goto error;
    for (size_t i = 0; i < t->refused.size; i++) {
        const Refused *r = &VEC_AT(t->refused, Refused, i);
        PyObject *item = Py_BuildValue("(LLiii)", (long long)r->offset, (long long)r->length, r->resource, r->scope,
                                       r->span);
        if (item == NULL) goto error;
        PyList_SET_ITEM(refused, (Py_ssize_t)i, item);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(scan_spans_doc,
             "scan_spans(buf, /)\n--\n\n"
             "The spans of a serialized ExportTraceServiceRequest as a dict of column bytes and lists, or\n"
             "None when the request must be decoded by protobuf; see otel_audio.receiver.decode_spans_fast.\n"
             "Raises ValueError on malformed input.");

static PyObject *scan_spans(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "scan_spans(buf) takes 1 positional argument");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    SpanScan t;
    const uint8_t *base = (const uint8_t *)view.buf;
    span_scan_init(&t, base);
    int rc = scan_trace_request(&t, base, base + view.len);
    PyObject *result = NULL;
    if (rc == FALLBACK && !t.core.nomem) {
        result = Py_NewRef(Py_None);
    } else if (rc < 0) {
        if (t.core.nomem)
            PyErr_NoMemory();
        else
            PyErr_Format(PyExc_ValueError, "malformed OTLP traces request at byte %lld: %s",
                         (long long)t.core.err_offset, t.core.err_msg);
    } else {
        result = build_span_result(&t);
    }
    span_scan_free(&t);
    PyBuffer_Release(&view);
    return result;
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
    {"scan_spans", (PyCFunction)(void (*)(void))scan_spans, METH_FASTCALL, scan_spans_doc},
    {"xxh64", (PyCFunction)(void (*)(void))py_xxh64, METH_FASTCALL, xxh64_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_otlp_scan",
    .m_doc = "Native scanner of OTLP metrics and traces requests (see fastscan.py, decode_spans_fast.py).",
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
