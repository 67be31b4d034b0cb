/* ccm.c — the host side of the CCM link (see ccm.h). Freestanding C99: no heap, no libc. */
#include "ccm.h"

#include <limits.h>

#ifdef __AVR__
/* An AVR has 2 KiB of RAM, and a string literal is copied into it at start-up: the library's own strings
 * (its messages, the fixed parts of frames) stay in flash there, ROM("…"), read a byte at a time. What
 * the application passes — names, formats, messages — is in RAM as usual. */
#include <avr/pgmspace.h>
#define ROM(s) PSTR(s)
#define AT(s, i, rom) ((rom) ? (char)pgm_read_byte((s) + (i)) : (s)[i])
#else
#define ROM(s) (s)
#define AT(s, i, rom) ((void)(rom), (s)[i])
#endif

enum { IDLE, IN_FRAME, DISCARD };

/* -- small helpers (no libc) ---------------------------------------------------------------------- */
static int slen(const char *s) {
  int n = 0;
  while (s[n]) n++;
  return n;
}

static int same_in(const char *a, int n, const char *b, int rom) { /* a[0..n) equals the C string b */
  int i;
  for (i = 0; i < n; i++)
    if (AT(b, i, rom) != a[i] || AT(b, i, rom) == 0) return 0;
  return AT(b, n, rom) == 0;
}
#define same(a, n, b) same_in((a), (n), (b), 0)

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int skip_ws(const char *s, int len, int i) {
  while (i < len && is_ws(s[i])) i++;
  return i;
}

static long hex4(const char *s, int len, int i) { /* the value of 4 hex digits at s[i], or -1 */
  int k;
  long v = 0; /* up to 0xFFFF: more than a 16-bit int holds (AVR) */
  if (i + 4 > len) return -1;
  for (k = 0; k < 4; k++) {
    char c = s[i + k];
    v <<= 4;
    if (is_digit(c)) v |= c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') v |= (c | 0x20) - 'a' + 10; /* either case */
    else return -1;
  }
  return v;
}

/* The code point of the \u escape at s[i] (a backslash), a low surrogate's escape after a high one's
 * joined to it; *next: the index after it. -1: not 4 hex digits; -2: a surrogate alone. */
static long u_escape(const char *s, int len, int i, int *next) {
  long u = hex4(s, len, i + 2), lo;
  *next = i + 6;
  if (u < 0xD800 || u > 0xDFFF) return u;
  lo = u < 0xDC00 && i + 7 < len && s[i + 6] == '\\' && s[i + 7] == 'u' ? hex4(s, len, i + 8) : -1;
  if (lo < 0xDC00 || lo > 0xDFFF) return -2;
  *next = i + 12;
  return 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
}

/* JSON's two-character escapes as pairs: the character, then its letter after '\'. '/' is read, never
 * written. esc_pair: the index of ch among the characters (side 0) or the letters (side 1), or -1. */
#define ESCAPES ROM("\"\"\\\\\bb\ff\nn\rr\tt//")
static int esc_pair(const char *t, char ch, int side, int end) {
  int i;
  for (i = side; i < end; i += 2)
    if (AT(t, i, 1) == ch) return i;
  return -1;
}

/* -- output -------------------------------------------------------------------------------------- */
static void flush(struct ccm *c) {
  if (c->out_len > 0 && c->write != NULL) c->write(c->out, c->out_len, c->write_ud);
  c->out_len = 0;
}

static void put_in(struct ccm *c, const char *s, int n, int rom) { /* c->written counts for printf */
  int i;
  for (i = 0; i < n; i++) {
    if (c->out_len == CCM_OUT_CHUNK) flush(c);
    c->out[c->out_len++] = AT(s, i, rom);
  }
  c->written += n;
}
#define put(c, s, n) put_in((c), (s), (n), 0)

static void put_rom(struct ccm *c, const char *s) { /* a string of the library's own (ROM) */
  int n = 0;
  while (AT(s, n, 1)) n++;
  put_in(c, s, n, 1);
}

static void put_ulong(struct ccm *c, unsigned long v, unsigned base) {
  char tmp[24];
  int n = sizeof(tmp);
  do {
    unsigned d = (unsigned)(v % base);
    tmp[--n] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v != 0);
  put(c, tmp + n, (int)sizeof(tmp) - n);
}

static void put_long(struct ccm *c, long v) {
  if (v < 0) put(c, "-", 1);
  put_ulong(c, v < 0 ? 0UL - (unsigned long)v : (unsigned long)v, 10);
}

/* s[0..n) escaped for a JSON string, and its closing quote (the opening one is the caller's) */
static void put_escaped(struct ccm *c, const char *s, int n, int rom) {
  int i;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)AT(s, i, rom);
    const char *t = ESCAPES;
    int k = esc_pair(t, (char)ch, 0, 14);
    if (k >= 0) {
      char e[2] = {'\\', AT(t, k + 1, 1)};
      put(c, e, 2);
    } else if (ch < 0x20) {
      int lo = ch & 15; /* ch < 0x20: \u0000..\u001f */
      char u[6] = {'\\', 'u', '0', '0', (char)('0' + (ch >> 4)), (char)(lo < 10 ? '0' + lo : 'a' + lo - 10)};
      put(c, u, 6);
    } else {
      put(c, (const char *)&ch, 1);
    }
  }
  put(c, "\"", 1);
}

#if CCM_ENABLE_DOUBLE
static void put_double(struct ccm *c, double v) { /* like %g with 9 significant digits; JSON has no NaN, inf */
  char dg[9];
  int e = 0, n, i, p, lo;
  unsigned long m;
  if (v != v || v - v != 0) {
    put_rom(c, ROM("null"));
    return;
  }
  if (v < 0) put(c, "-", 1), v = -v;
  if (v == 0) {
    put(c, "0", 1);
    return;
  }
  while (v >= 10) v /= 10, e++;
  while (v < 1) v *= 10, e--;
  m = (unsigned long)(v * 1e8 + 0.5);
  if (m >= 1000000000UL) m /= 10, e++;
  for (i = 8; i >= 0; i--) dg[i] = (char)('0' + m % 10), m /= 10;
  for (n = 9; n > 1 && dg[n - 1] == '0'; n--) {
  }
  if (e < -5 || e >= 9) { /* d.ddde±X */
    put(c, dg, 1);
    if (n > 1) put(c, ".", 1), put(c, dg + 1, n - 1);
    put(c, "e", 1);
    put_long(c, e);
    return;
  }
  lo = e - n + 1 < 0 ? e - n + 1 : 0; /* the lowest power of ten written */
  for (p = e > 0 ? e : 0; p >= lo; p--) { /* digit i stands for 10^(e-i); zeros around them */
    i = e - p;
    put(c, i >= 0 && i < n ? dg + i : "0", 1);
    if (p == 0 && lo < 0) put(c, ".", 1);
  }
}
#endif

/* fmt in RAM (the application's), or in ROM (the library's own: rom 1). Returns the bytes written. */
static int vfmt(struct ccm *c, const char *fmt, int rom, va_list ap) {
  int start = c->written;
  for (; AT(fmt, 0, rom); fmt++) {
    int lng = 0, prec = -1;
    char conv;
    if (AT(fmt, 0, rom) != '%') {
      put_in(c, fmt, 1, rom);
      continue;
    }
    fmt++;
    if (AT(fmt, 0, rom) == '.' && AT(fmt, 1, rom) == '*') prec = va_arg(ap, int), fmt += 2;
    if (AT(fmt, 0, rom) == 'l') lng = 1, fmt++;
    conv = AT(fmt, 0, rom);
    switch (conv) {
      case 'd':
      case 'i':
        put_long(c, lng ? va_arg(ap, long) : (long)va_arg(ap, int));
        break;
      case 'u':
      case 'x':
        put_ulong(c, lng ? va_arg(ap, unsigned long) : (unsigned long)va_arg(ap, unsigned), conv == 'x' ? 16 : 10);
        break;
      case 's':
      case 'Q': {
        const char *s = va_arg(ap, const char *);
        int n = s == NULL ? 0 : prec >= 0 ? prec : slen(s);
        if (s == NULL) put_rom(c, ROM("null"));
        else if (conv == 's') put(c, s, n);
        else put(c, "\"", 1), put_escaped(c, s, n, 0);
        break;
      }
      case 'B':
        put_rom(c, va_arg(ap, int) ? ROM("true") : ROM("false"));
        break;
      case 'g':
#if CCM_ENABLE_DOUBLE
        put_double(c, va_arg(ap, double));
#else /* its argument is taken all the same (the ones after it stay in place), and the JSON stays valid */
        (void)va_arg(ap, double);
        put_rom(c, ROM("null"));
#endif
        break;
      case '%':
        put(c, "%", 1);
        break;
      default: /* an unknown conversion is printed as is; a '%' at the end alone */
        put_in(c, fmt - 1, conv ? 2 : 1, rom);
        if (conv == 0) return c->written - start;
    }
  }
  return c->written - start;
}

static void outf(struct ccm *c, const char *f, ...) { /* f: the library's own (ROM) */
  va_list ap;
  va_start(ap, f);
  vfmt(c, f, 1, ap);
  va_end(ap);
}

int ccm_vprintf(struct ccm *c, const char *f, va_list ap) {
  int n = vfmt(c, f, 0, ap);
  flush(c);
  return n;
}

int ccm_printf(struct ccm *c, const char *f, ...) {
  va_list ap;
  int n;
  va_start(ap, f);
  n = ccm_vprintf(c, f, ap);
  va_end(ap);
  return n;
}

/* -- JSON: checking ------------------------------------------------------------------------------- */
/* What a check finds wrong: a negative code from the scanners below, its message the -code'th of these. */
enum { E_CHAR = -1, E_CONTROL = -2, E_U = -3, E_SURROGATE = -4, E_ESCAPE = -5, E_UTF8 = -6, E_UNTERMINATED = -7,
       E_NUMBER = -8, E_RANGE = -9, E_DEPTH = -10, E_KEY = -11, E_COLON = -12, E_NEXT = -13, E_INCOMPLETE = -14,
       E_AFTER = -15 };
#define CHECK_MESSAGES                                                                                          \
  ROM("unexpected character\0control character in a string\0bad \\u escape\0lone surrogate escape\0"            \
      "bad escape in a string\0invalid UTF-8\0unterminated string\0bad number\0number out of range\0"             \
      "nesting deeper than 32\0expected a key\0expected ':'\0expected ',' or a close\0incomplete frame\0"         \
      "data after the value")

static const char *check_message(int code) {
  const char *m = CHECK_MESSAGES;
  while (++code < 0)
    while (AT(m++, 0, 1)) {
    }
  return m;
}

static void store(char *out, int size, int *n, unsigned ch) { /* out[*n] when it fits; *n counts on */
  if (*n < size) out[*n] = (char)ch;
  (*n)++;
}

static void utf8(char *out, int size, int *n, unsigned long cp) {
  int k = cp < 0x80 ? 0 : cp < 0x800 ? 1 : cp < 0x10000 ? 2 : 3, i; /* continuation bytes */
  for (i = k; i >= 0; i--) {
    unsigned b = (unsigned)(cp >> 6 * i);
    store(out, size, n, i < k ? 0x80 | (b & 0x3F) : k ? (0xFF80u >> k & 0xFF) | b : b); /* lead: 110…, 1110…, 11110… */
  }
}

/* One string token from s[i] == '"', checked and decoded into out[0..size) (*n: the decoded length, counted
 * on past size): the index after its closing quote, or an E_ code. */
static int scan_string(const char *s, int len, int i, char *out, int size, int *n) {
  i++;
  while (i < len) {
    unsigned char ch = (unsigned char)s[i], lo, hi;
    int k;
    if (ch == '"') return i + 1;
    if (ch < 0x20) return E_CONTROL;
    if (ch == '\\') {
      char e = i + 1 < len ? s[i + 1] : 0;
      if (e == 'u') {
        long u = u_escape(s, len, i, &i);
        if (u < 0) return (int)u + 1 + E_U; /* -1: E_U, -2: E_SURROGATE */
        utf8(out, size, n, (unsigned long)u);
        continue;
      }
      if ((k = esc_pair(ESCAPES, e, 1, 16)) < 0) return E_ESCAPE;
      store(out, size, n, (unsigned char)AT(ESCAPES, k - 1, 1));
      i += 2;
      continue;
    }
    /* UTF-8 (RFC 3629's table): no overlong forms, no surrogates, nothing beyond U+10FFFF */
    k = ch < 0x80 ? 0 : (ch >= 0xC2) + (ch >= 0xE0) + (ch >= 0xF0);
    if (ch >= 0x80 && (k == 0 || ch > 0xF4 || i + k >= len)) return E_UTF8;
    lo = ch == 0xE0 ? 0xA0 : ch == 0xF0 ? 0x90 : 0x80, hi = ch == 0xED ? 0x9F : ch == 0xF4 ? 0x8F : 0xBF;
    store(out, size, n, ch);
    while (k--) {
      ch = (unsigned char)s[++i];
      if (ch < lo || ch > hi) return E_UTF8;
      store(out, size, n, ch);
      lo = 0x80, hi = 0xBF;
    }
    i++;
  }
  return E_UNTERMINATED;
}

/* One number token from s[i]: the index after it, or an E_ code. Refuses what a double cannot hold. */
static int scan_number(const char *s, int len, int i) {
  int first = -1, int_digits = 0, lead = 0, exp_neg = 0;
  long exp = 0;
  const char *big = ROM("17976931348623157"); /* DBL_MAX's leading digits */
  if (i < len && s[i] == '-') i++;
  if (i >= len || !is_digit(s[i])) return E_NUMBER;
  if (s[i] == '0') {
    i++;
  } else {
    first = i;
    while (i < len && is_digit(s[i])) i++, int_digits++;
  }
  if (i < len && s[i] == '.') {
    i++;
    if (i >= len || !is_digit(s[i])) return E_NUMBER;
    while (i < len && is_digit(s[i])) {
      if (first < 0 && s[i] == '0') lead++;
      else if (first < 0) first = i;
      i++;
    }
  }
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) exp_neg = s[i] == '-', i++;
    if (i >= len || !is_digit(s[i])) return E_NUMBER;
    while (i < len && is_digit(s[i])) {
      if (exp < 100000) exp = exp * 10 + (s[i] - '0');
      i++;
    }
  }
  if (first >= 0) { /* the decimal exponent of the first significant digit must stay ≤ 308 */
    long e10 = (exp_neg ? -exp : exp) + (int_digits > 0 ? int_digits - 1 : -(lead + 1));
    if (e10 > 308) return E_RANGE;
    if (e10 == 308) {
      int k = first, j = 0;
      for (; k < i && AT(big, j, 1); k++) {
        if (s[k] == '.') continue;
        if (!is_digit(s[k]) || s[k] < AT(big, j, 1)) break;
        if (s[k] > AT(big, j, 1)) return E_RANGE;
        j++;
      }
    }
  }
  return i;
}

static int scan_word(const char *s, int len, int i, const char *w) { /* w: ROM. -1: E_CHAR */
  int n = 0;
  while (AT(w, n, 1)) n++;
  if (i + n > len) return -1;
  return same_in(s + i, n, w, 1) ? i + n : -1;
}

/* The index after the JSON value at s[i] (whitespace before it skipped), checked; or an E_ code. */
static int scan_value(const char *s, int len, int i) {
  enum { VALUE, KEY, COLON, NEXT } want = VALUE;
  uint32_t objects = 0; /* a stack of bits, the innermost level's lowest: 1 an object, 0 an array */
  int depth = 0, may_close = 0, n = 0; /* n: what strings decode to, counted and not kept */
  for (i = skip_ws(s, len, i); i < len; i = skip_ws(s, len, i)) {
    char ch = s[i];
    if (may_close && ch == (objects & 1 ? '}' : ']')) { /* after an open or a member */
      i++;
      objects >>= 1;
      if (--depth == 0) return i;
      want = NEXT;
      continue;
    }
    may_close = 0;
    if (want == NEXT) {
      if (ch != ',') return E_NEXT;
      i++;
      want = objects & 1 ? KEY : VALUE;
    } else if (want == KEY) {
      if (ch != '"') return E_KEY;
      if ((i = scan_string(s, len, i, NULL, 0, &n)) < 0) return i;
      want = COLON;
    } else if (want == COLON) {
      if (ch != ':') return E_COLON;
      i++;
      want = VALUE;
    } else if (ch == '{' || ch == '[') {
      if (++depth > CCM_MAX_DEPTH) return E_DEPTH;
      objects = objects << 1 | (ch == '{');
      want = ch == '{' ? KEY : VALUE;
      may_close = 1;
      i++;
    } else {
      if (ch == '"') i = scan_string(s, len, i, NULL, 0, &n);
      else if (ch == '-' || is_digit(ch)) i = scan_number(s, len, i);
      else i = scan_word(s, len, i, ch == 't' ? ROM("true") : ch == 'f' ? ROM("false") : ROM("null"));
      if (i < 0 || depth == 0) return i;
      want = NEXT;
      may_close = 1;
    }
  }
  return E_INCOMPLETE;
}

const char *ccm_json_check(const char *s, int len) {
  int i = scan_value(s, len, 0);
  if (i >= 0 && skip_ws(s, len, i) < len) i = E_AFTER;
  return i < 0 ? check_message(i) : NULL;
}

/* -- JSON: finding -------------------------------------------------------------------------------- */
/* One byte of JSON text, as ccm_feed() frames the UART's bytes one at a time. *str: bit 0 inside a string,
 * bit 1 after a backslash in it; *depth: brackets open. 1 when the byte ends the value that started at
 * depth 0 (a close, or a string's last quote). */
static int step(uint8_t *str, int *depth, char ch) {
  if (*str) {
    if (*str & 2) *str = 1;
    else if (ch == '\\') *str = 3;
    else if (ch == '"') return *str = 0, *depth == 0;
    return 0;
  }
  if (ch == '"') *str = 1;
  else if (ch == '{' || ch == '[') ++*depth;
  else if (ch == '}' || ch == ']') return --*depth == 0;
  return 0;
}

static int tok_type(char ch) { /* the first byte of each type, in CCM_TOK_ order from STRING */
  const char *t = ROM("\"-tfn{[");
  int i;
  if (is_digit(ch)) return CCM_TOK_NUMBER;
  for (i = 0; AT(t, i, 1); i++)
    if (AT(t, i, 1) == ch) return CCM_TOK_STRING + i;
  return CCM_TOK_INVALID;
}

int ccm_json_next(const char *s, int len, int offset, const char **key, int *key_len, const char **val,
                  int *val_len, int *val_type) {
  int i, e; /* scan_value stops at a close, at the end and at what is not a value: nothing next */
  if (len < 2 || (s[0] != '{' && s[0] != '[')) return 0;
  i = skip_ws(s, len, offset == 0 ? 1 : offset);
  if (offset != 0) {
    if (i >= len || s[i] != ',') return 0;
    i = skip_ws(s, len, i + 1);
  }
  if (key != NULL) *key = NULL, *key_len = 0;
  if (s[0] == '{') {
    if (i >= len || s[i] != '"' || (e = scan_value(s, len, i)) < 0) return 0;
    if (key != NULL) *key = s + i, *key_len = e - i;
    i = skip_ws(s, len, skip_ws(s, len, e) + 1); /* past the colon */
  }
  if ((e = scan_value(s, len, i)) < 0) return 0;
  if (val != NULL) *val = s + i, *val_len = e - i;
  if (val_type != NULL) *val_type = tok_type(s[i]);
  return e;
}

static int key_eq(const char *tok, int tok_len, const char *key, int key_len) {
  char buf[64];
  const char *p;
  int i, n = tok_len - 2;
  if (n < 0) return 0; /* no key (an array's element) */
  for (i = 1; i <= n && tok[i] != '\\'; i++) {
  }
  if (i <= n) p = buf, n = ccm_json_unescape(tok, tok_len, buf, (int)sizeof(buf)); /* escapes: decoded */
  else p = tok + 1;                                                                  /* none: in place */
  if (n != key_len) return 0;
  for (i = 0; i < n; i++)
    if (p[i] != key[i]) return 0;
  return 1;
}

int ccm_json_streq(const char *tok, int tok_len, const char *s) {
  return tok_len >= 2 && tok[0] == '"' && key_eq(tok, tok_len, s, slen(s));
}

int ccm_json_find(const char *s, int len, const char *path, const char **tok, int *tok_len) {
  int start = skip_ws(s, len, 0), end;
  if (path == NULL || *path++ != '$') return CCM_TOK_INVALID;
  while (*path) { /* one level down: the members up to the close (ccm_json_next stops there) */
    const char *key = NULL, *k, *v, *hit = NULL;
    int klen = 0, kl, vl, off = 0;
    long index = -1;
    if (*path == '.') {
      key = ++path;
      while (*path && *path != '.' && *path != '[') path++;
      klen = (int)(path - key); /* in an array: no key matches */
    } else if (*path == '[') {
      index = 0;
      for (path++; is_digit(*path); path++) index = index * 10 + (*path - '0');
      if (*path++ != ']' || s[start] != '[') return CCM_TOK_INVALID;
    } else {
      return CCM_TOK_INVALID;
    }
    while ((off = ccm_json_next(s + start, len - start, off, &k, &kl, &v, &vl, NULL)) != 0)
      if (key != NULL ? key_eq(k, kl, key, klen) : index-- == 0) hit = v; /* a repeated key: the last */
    if (hit == NULL) return CCM_TOK_INVALID;
    start = (int)(hit - s);
  }
  if ((end = scan_value(s, len, start)) < 0) return CCM_TOK_INVALID;
  if (tok != NULL) *tok = s + start, *tok_len = end - start;
  return tok_type(s[start]);
}

int ccm_json_unescape(const char *tok, int tok_len, char *out, int size) {
  int n = 0;
  if (tok_len < 2 || tok[0] != '"' || scan_string(tok, tok_len, 0, out, size, &n) != tok_len || n >= size) return -1;
  out[n] = 0; /* n < size: room for the NUL */
  return n;
}

/* -- typed params --------------------------------------------------------------------------------- */
static int arg(const struct ccm_req *r, const char *path, const char **tok, int *len) {
  return ccm_json_find(r->params, r->params_len, path, tok, len);
}

static int parse_long(const char *t, int n, long *out) { /* a plain integer token, no overflow */
  unsigned long v = 0, max;
  int i = t[0] == '-' ? 1 : 0;
  if (i >= n) return 0;
  max = i ? (unsigned long)LONG_MAX + 1 : (unsigned long)LONG_MAX;
  for (; i < n; i++) {
    unsigned d;
    if (!is_digit(t[i])) return 0;
    d = (unsigned)(t[i] - '0');
    if (v > (max - d) / 10) return 0;
    v = v * 10 + d;
  }
  *out = t[0] == '-' ? (long)(0UL - v) : (long)v;
  return 1;
}

int ccm_arg_long(const struct ccm_req *r, const char *path, long *out) {
  const char *t;
  int n;
  return arg(r, path, &t, &n) == CCM_TOK_NUMBER && parse_long(t, n, out);
}

#if CCM_ENABLE_DOUBLE
int ccm_arg_double(const struct ccm_req *r, const char *path, double *out) {
  const char *t;
  int n, i, e = 0, frac = 0, x = 0, xneg = 0;
  double v = 0;
  if (arg(r, path, &t, &n) != CCM_TOK_NUMBER) return 0; /* a number the frame's check let through */
  for (i = t[0] == '-'; i < n && t[i] != 'e' && t[i] != 'E'; i++) {
    if (t[i] == '.') frac = 1;
    else v = v * 10 + (t[i] - '0'), e -= frac;
  }
  if (i++ < n) { /* the exponent */
    if (t[i] == '+' || t[i] == '-') xneg = t[i++] == '-';
    for (; i < n; i++)
      if (x < 10000) x = x * 10 + (t[i] - '0');
  }
  for (e += xneg ? -x : x; e > 0; e--) v *= 10;
  for (; e < 0; e++) v /= 10;
  *out = t[0] == '-' ? -v : v;
  return 1;
}
#endif

int ccm_arg_bool(const struct ccm_req *r, const char *path, int *out) {
  int t = arg(r, path, NULL, NULL);
  if (t != CCM_TOK_TRUE && t != CCM_TOK_FALSE) return 0;
  *out = t == CCM_TOK_TRUE;
  return 1;
}

int ccm_arg_str(const struct ccm_req *r, const char *path, char *out, int size) {
  const char *t;
  int n;
  return arg(r, path, &t, &n) == CCM_TOK_STRING && ccm_json_unescape(t, n, out, size) >= 0;
}

/* -- answering ------------------------------------------------------------------------------------ */
/* message: the library's own (ROM), or the application's (rom 0) */
/* {"id":…,"error":{"code":…,"message":"  — the message and the rest are the caller's */
static void error_head(struct ccm *c, const char *id, int id_len, int code) {
  outf(c, ROM("{\"id\":%.*s,\"error\":{\"code\":%d,\"message\":\""), id ? id_len : 4, id ? id : "null", code);
  if (code == CCM_PARSE_ERROR) put_rom(c, ROM("parse error: "));
}

static void answer_error(struct ccm *c, const char *id, int id_len, int code, const char *message, int rom) {
  int n = 0;
  error_head(c, id, id_len, code);
  while (AT(message, n, rom)) n++;
  put_escaped(c, message, n, rom);
  put_rom(c, ROM("}}\n"));
  flush(c);
}

static void result_head(struct ccm_req *r) { /* {"id":…,"result":  */
  outf(r->ctx, ROM("{\"id\":%.*s,\"result\":"), r->id_len, r->id);
}

static void result_v(struct ccm_req *r, const char *fmt, int rom, va_list ap) {
  if (r->answered) return;
  r->answered = 1;
  if (r->id == NULL) return;
  result_head(r);
  if (fmt == NULL) put_rom(r->ctx, ROM("null"));
  else vfmt(r->ctx, fmt, rom, ap);
  put_rom(r->ctx, ROM("}\n"));
  flush(r->ctx);
}

void ccm_result(struct ccm_req *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  result_v(r, fmt, 0, ap);
  va_end(ap);
}

static void result_rom(struct ccm_req *r, const char *fmt, ...) { /* fmt: the library's own */
  va_list ap;
  va_start(ap, fmt);
  result_v(r, fmt, 1, ap);
  va_end(ap);
}

static void error_in(struct ccm_req *r, int code, const char *message, int rom) {
  if (r->answered) return;
  r->answered = 1;
  if (r->id != NULL) answer_error(r->ctx, r->id, r->id_len, code, message, rom);
}

void ccm_error(struct ccm_req *r, int code, const char *message) { error_in(r, code, message, 0); }

/* -- built-ins every host serves (docs/protocol.md, the UART link) ------------------------------------------------------ */
static void rpc_list(struct ccm_req *r) {
  struct ccm *c = r->ctx;
  int i;
  result_head(r);
  put_rom(c, ROM("["));
  for (i = 0; i < c->n_methods; i++) outf(c, ROM("%Q,"), c->methods[i].name);
  put_rom(c, ROM("\"RPC.List\",\"Sys.Info\"]}\n"));
  flush(c);
  r->answered = 1;
}

/* The firmware id the build stamps into the image after linking (pc/fwid.py, the lamp's Makefile): a
 * marker and 16 hex digits, all "0" until stamped. The CCM reads it from the image it flashes; when the host
 * reports it, the next update rewrites only the pages that differ. Read through a volatile pointer: the
 * compiler must not fold away what the build changes after it. */
const char ccm_fw_id_slot[25] = "CCMFWID1"
                                "0000000000000000";

static const char *stamped_fw_id(void) {
  const char *volatile slot = ccm_fw_id_slot;
  int i;
  for (i = 8; i < 24; i++)
    if (slot[i] != '0') return slot + 8;
  return "";
}

static void sys_info(struct ccm_req *r) {
  struct ccm *c = r->ctx;
  result_rom(r, ROM("{\"fw_version\":%Q,\"arch\":%Q,\"fw_id\":%Q,\"app\":%Q}"), c->fw_version, c->arch,
             c->fw_id ? c->fw_id : stamped_fw_id(), c->app);
}

/* -- the link ------------------------------------------------------------------------------------- */
void ccm_init(struct ccm *c, char *frame_buf, int frame_buf_size, ccm_write_fn write, void *userdata) {
  char *p = (char *)c;
  unsigned i;
  for (i = 0; i < sizeof(*c); i++) p[i] = 0;
  c->buf = frame_buf;
  c->size = frame_buf_size;
  c->write = write;
  c->write_ud = userdata;
  c->fw_version = "1.0";
  c->arch = "c";
  c->app = "host";
}

void ccm_set_info(struct ccm *c, const char *fw_version, const char *arch, const char *app) {
  c->fw_version = fw_version;
  c->arch = arch;
  c->app = app;
}

int ccm_export(struct ccm *c, const char *name, ccm_handler fn, void *userdata) {
  int i;
  for (i = 0; i < c->n_methods; i++)
    if (same(name, slen(name), c->methods[i].name)) break;
  if (i == CCM_MAX_METHODS) return -1;
  if (i == c->n_methods) c->n_methods++;
  c->methods[i].name = name;
  c->methods[i].fn = fn;
  c->methods[i].userdata = userdata;
  return 0;
}

static void dispatch(struct ccm *c, struct ccm_req *r) {
  int i;
  for (i = 0; i < c->n_methods; i++) {
    if (same(r->method, r->method_len, c->methods[i].name)) {
      r->userdata = c->methods[i].userdata;
      c->methods[i].fn(r);
      if (!r->answered) ccm_result(r, NULL);
      return;
    }
  }
  if (same_in(r->method, r->method_len, ROM("RPC.List"), 1)) {
    if (r->id != NULL) rpc_list(r);
  } else if (same_in(r->method, r->method_len, ROM("Sys.Info"), 1)) {
    sys_info(r);
  } else {
    error_in(r, CCM_METHOD_NOT_FOUND, ROM("method not found"), 1);
  }
}

static void respond(struct ccm *c, const char *id, int id_len, const char *result, int result_len,
                    const char *error, int error_len) {
  long n;
  int i;
  if (!parse_long(id, id_len, &n)) return; /* not one of our ids */
  for (i = 0; i < CCM_MAX_PENDING; i++) {
    if (c->pending[i].fn != NULL && c->pending[i].id == (uint32_t)n) {
      struct ccm_result res;
      ccm_result_fn fn = c->pending[i].fn;
      const char *code;
      int code_len;
      long e = 0;
      c->pending[i].fn = NULL;
      res.json = error ? error : result, res.len = error ? error_len : result_len;
      if (error != NULL && (ccm_json_find(error, error_len, "$.code", &code, &code_len) != CCM_TOK_NUMBER ||
                            !parse_long(code, code_len, &e) || e == 0))
        e = CCM_INTERNAL_ERROR; /* an error without a usable code */
      res.error = (int)e;
      fn(c, &res, c->pending[i].userdata);
      return;
    }
  }
}

static void frame(struct ccm *c, const char *s, int len) {
  const char *why = ccm_json_check(s, len), *p = ROM("id\0method\0params\0result\0error"), *m[5];
  int i, k, ml[5], mt[5], code = CCM_PARSE_ERROR;
  struct ccm_req r;
  c->stats.frames++;
  for (i = 0; i < 5; i++) { /* the members read, in m[0..4]: none from what is not JSON, no answer's in a request */
    char path[9] = "$.";
    for (k = 2; (path[k] = AT(p, 0, 1)) != 0; k++) p++;
    p++;
    mt[i] = why || (i > 2 && m[1]) ? CCM_TOK_INVALID : ccm_json_find(s, len, path, &m[i], &ml[i]);
    if (mt[i] == CCM_TOK_INVALID) m[i] = NULL, ml[i] = 0;
  }
  if (why == NULL && s[0] != '{') why = ROM("invalid request: batches are not supported"), code = CCM_INVALID_REQUEST;
  if (why == NULL) {
    why = ROM("invalid request"), code = CCM_INVALID_REQUEST;
    if (!((1 << CCM_TOK_INVALID | 1 << CCM_TOK_STRING | 1 << CCM_TOK_NUMBER | 1 << CCM_TOK_NULL) >> mt[0] & 1))
      m[0] = NULL; /* an id that is there and not a string, number or null is answered with null */
    else if (m[1] != NULL ? mt[1] == CCM_TOK_STRING : m[0] != NULL && (m[3] != NULL || m[4] != NULL))
      why = NULL; /* a request (its method a string), or an answer to one of ours */
  }
  if (why != NULL) {
    c->stats.errors++;
    answer_error(c, m[0], ml[0], code, why, 1);
  } else if (m[1] == NULL) {
    respond(c, m[0], ml[0], m[3], ml[3], m[4], ml[4]);
  } else {
    r.ctx = c, r.id = m[0], r.id_len = ml[0], r.userdata = NULL, r.answered = 0;
    r.method = m[1] + 1, r.method_len = ml[1] - 2; /* between the quotes (escaped names match nothing) */
    r.params = m[2] != NULL ? m[2] : "null", r.params_len = m[2] != NULL ? ml[2] : 4;
    dispatch(c, &r);
  }
}

static void oversize(struct ccm *c) {
  c->stats.overflows++;
  error_head(c, NULL, 0, CCM_INVALID_REQUEST);
  outf(c, ROM("frame too large: %d+ bytes, the frame buffer is %d\"}}\n"), c->len + 1, c->size);
  flush(c);
}

void ccm_feed(struct ccm *c, const void *data, int len) {
  const char *p = (const char *)data;
  int i;
  for (i = 0; i < len; i++) {
    char ch = p[i];
    if (c->state == IDLE) {
      if (ch != '{' && ch != '[') continue; /* noise between frames, \r\n after a closed frame */
      c->state = IN_FRAME, c->len = 0, c->depth = 0, c->str = 0;
    }
    if (ch == '\n') { /* a newline ends any frame: one that has not closed is incomplete */
      if (c->state == IN_FRAME) {
        c->stats.frames++, c->stats.errors++;
        answer_error(c, NULL, 0, CCM_PARSE_ERROR, ROM("incomplete frame"), 1);
      }
      c->state = IDLE;
      continue;
    }
    if (c->state == IN_FRAME) {
      if (c->len == c->size) {
        oversize(c);
        c->state = DISCARD;
      } else {
        c->buf[c->len++] = ch;
      }
    }
    if (step(&c->str, &c->depth, ch)) {
      if (c->state == IN_FRAME) frame(c, c->buf, c->len);
      c->state = IDLE;
    }
  }
}

void ccm_poll(struct ccm *c, uint32_t now_ms) {
  int i;
  c->now = now_ms;
  for (i = 0; i < CCM_MAX_PENDING; i++) {
    if (c->pending[i].fn != NULL && (int32_t)(now_ms - c->pending[i].deadline) >= 0) {
      ccm_result_fn fn = c->pending[i].fn;
      struct ccm_result res;
      res.error = CCM_TIMEOUT, res.json = "{\"code\":-32000,\"message\":\"timeout\"}", res.len = 36;
      c->pending[i].fn = NULL;
      c->stats.timeouts++;
      fn(c, &res, c->pending[i].userdata);
    }
  }
}

/* -- calling the CCM ------------------------------------------------------------------------------ */
static void ignore(struct ccm *c, const struct ccm_result *res, void *ud) {
  (void)c, (void)res, (void)ud;
}

/* {"id":N,"method":…,"params":…} (id 0: a notification, no id). method and fmt: the application's, or the
 * library's own (rom 1). */
static void send_v(struct ccm *c, uint32_t id, const char *method, const char *fmt, int rom, va_list ap) {
  int n = 0;
  if (id) outf(c, ROM("{\"id\":%lu,\"method\":\""), (unsigned long)id);
  else put_rom(c, ROM("{\"method\":\""));
  while (AT(method, n, rom)) n++;
  put_escaped(c, method, n, rom);
  if (fmt != NULL) {
    put_rom(c, ROM(",\"params\":"));
    vfmt(c, fmt, rom, ap);
  }
  put_rom(c, ROM("}\n"));
  flush(c);
}

static int call_v(struct ccm *c, const char *method, ccm_result_fn fn, void *ud, uint32_t timeout_ms,
                  const char *fmt, int rom, va_list ap) {
  int i;
  uint32_t id;
  for (i = 0; i < CCM_MAX_PENDING && c->pending[i].fn != NULL; i++) {
  }
  if (i == CCM_MAX_PENDING) return -1;
  id = ++c->next_id; /* 1, 2, … 0x7FFFFFFF, 1 */
  if (id > 0x7FFFFFFF) id = c->next_id = 1;
  c->pending[i].id = id;
  c->pending[i].deadline = c->now + timeout_ms;
  c->pending[i].fn = fn != NULL ? fn : ignore;
  c->pending[i].userdata = ud;
  send_v(c, id, method, fmt, rom, ap);
  return (int)id;
}

int ccm_call(struct ccm *c, const char *method, ccm_result_fn fn, void *userdata, uint32_t timeout_ms,
             const char *params_fmt, ...) {
  va_list ap;
  int id;
  va_start(ap, params_fmt);
  id = call_v(c, method, fn, userdata, timeout_ms, params_fmt, 0, ap);
  va_end(ap);
  return id;
}

void ccm_notify(struct ccm *c, const char *method, const char *params_fmt, ...) {
  va_list ap;
  va_start(ap, params_fmt);
  send_v(c, 0, method, params_fmt, 0, ap);
  va_end(ap);
}

/* The library's own calls: method and fmt in ROM; fn NULL and no timeout: a notification. */
static int call_rom(struct ccm *c, const char *method, ccm_result_fn fn, void *ud, uint32_t timeout_ms,
                    const char *fmt, ...) {
  va_list ap;
  int id = 0;
  va_start(ap, fmt);
  if (timeout_ms) id = call_v(c, method, fn, ud, timeout_ms, fmt, 1, ap);
  else send_v(c, 0, method, fmt, 1, ap);
  va_end(ap);
  return id;
}

int ccm_config_get(struct ccm *c, const char *key, ccm_result_fn fn, void *userdata) {
  if (key == NULL) return call_rom(c, ROM("Config.Get"), fn, userdata, 5000, NULL);
  return call_rom(c, ROM("Config.Get"), fn, userdata, 5000, ROM("{\"key\":%Q}"), key);
}

int ccm_mqtt_pub(struct ccm *c, const char *topic, const char *message, int qos, ccm_result_fn fn,
                 void *userdata) {
  const char *fmt = qos ? ROM("{\"topic\":%Q,\"message\":%Q,\"qos\":%d}") : ROM("{\"topic\":%Q,\"message\":%Q}");
  return call_rom(c, ROM("MQTT.Pub"), fn, userdata, fn != NULL ? 10000 : 0, fmt, topic, message, qos);
}

int ccm_mqtt_sub(struct ccm *c, const char *topic, int qos, ccm_result_fn fn, void *userdata) {
  if (qos) return call_rom(c, ROM("MQTT.Sub"), fn, userdata, 5000, ROM("{\"topic\":%Q,\"qos\":%d}"), topic, qos);
  return call_rom(c, ROM("MQTT.Sub"), fn, userdata, 5000, ROM("{\"topic\":%Q}"), topic);
}
