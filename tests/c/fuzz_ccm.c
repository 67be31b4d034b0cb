/* Fuzz of host_lib/c's framer, checker, parser and dispatcher, for ASan/UBSan builds.
 *
 *   fuzz_ccm ITERATIONS SEED
 *
 * Each case is random bytes, a mutated real frame (bit flips, cuts, insertions, duplicated runs),
 * deep nesting, an oversize value, or invalid UTF-8, fed in random splits into a link whose frame
 * buffer is an exactly sized heap block (so ASan sees any overrun). Checked after every case:
 * every line written is one valid JSON object, and the link still answers a probe call. The JSON
 * functions are also run on the raw case bytes, valid or not. Exit status 1 on the first violation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccm.h"

static uint64_t rng;
static uint32_t rnd(void) { /* xorshift64* */
  rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
  return (uint32_t)((rng * 2685821657736338717ULL) >> 32);
}

static char wire[1 << 16];
static int wire_len;
static int capture(const char *buf, int len, void *ud) {
  (void)ud;
  if (wire_len + len > (int)sizeof(wire)) wire_len = 0; /* only the latest lines matter */
  memcpy(wire + wire_len, buf, (size_t)len);
  wire_len += len;
  return len;
}

static void sum(struct ccm_req *r) {
  long a, b;
  double d;
  char s[16];
  int flag;
  if (ccm_arg_long(r, "$[0]", &a) && ccm_arg_long(r, "$[1]", &b)) {
    ccm_result(r, "%ld", (long)((unsigned long)a + (unsigned long)b));
    return;
  }
  if (ccm_arg_double(r, "$[0]", &d)) ccm_result(r, "%g", d);
  else if (ccm_arg_str(r, "$.s", s, sizeof(s))) ccm_result(r, "%Q", s);
  else if (ccm_arg_bool(r, "$.a.b[3].c", &flag)) ccm_result(r, "%B", flag);
}

static void delta(struct ccm_req *r) { ccm_shadow_report(r->ctx, "%.*s", r->params_len, r->params); }

static void on_result(struct ccm *c, const struct ccm_result *res, void *ud) {
  (void)c, (void)ud;
  if (res->error == 0 && ccm_json_check(res->json, res->len) != NULL) {
    printf("result callback got invalid JSON\n");
    exit(1);
  }
}

static const char *seeds[] = {
    "{\"id\":1,\"method\":\"Sum\",\"params\":[2,3]}\n",
    "{\"method\":\"Shadow.Delta\",\"params\":{\"on\":true,\"x\":[1,{\"y\":\"\\u00e9\"}]}}\n",
    "{\"id\":\"s\",\"method\":\"Sum\",\"params\":{\"s\":\"a\\\"b\\\\c\\ud83d\\ude00\",\"a\":{\"b\":[0,1,2,{\"c\":true}]}}}",
    "{\"id\":1,\"result\":{\"fw_version\":\"1.0\"}}\n{\"id\":2,\"error\":{\"code\":-32003,\"message\":\"x\"}}\r\n",
    "{\"id\":3,\"method\":\"RPC.List\"}{\"id\":4,\"method\":\"Sys.Info\"}",
    "[{\"id\":1,\"method\":\"Sum\",\"params\":[1e308,-0.5e-3]}]\n",
    "{\"id\":1.5e3,\"method\":\"Sum\",\"params\":[-9223372036854775808,9223372036854775807]}\n",
};

static int make_case(char *buf, int cap) {
  int kind = (int)(rnd() % 6), n = 0, i;
  if (kind == 0) { /* random bytes, biased to JSON punctuation */
    static const char alphabet[] = "{}[]\":,\\\n\r 0123456789.-eEtrufalsn\xc3\xa9\xed\xa0\xff";
    n = (int)(rnd() % (unsigned)cap);
    for (i = 0; i < n; i++) buf[i] = rnd() % 4 ? alphabet[rnd() % (sizeof(alphabet) - 1)] : (char)rnd();
  } else if (kind == 1) { /* deep nesting, closed or not */
    int d = (int)(rnd() % 200);
    for (i = 0; i < d && n < cap; i++) buf[n++] = rnd() % 2 ? '[' : '{';
    for (i = 0; i < d && n < cap && rnd() % 8; i++) buf[n++] = rnd() % 2 ? ']' : '}';
  } else if (kind == 2) { /* oversize */
    const char *s = "{\"id\":9,\"method\":\"Sum\",\"params\":[\"";
    int m = (int)strlen(s);
    memcpy(buf, s, (size_t)m);
    n = m + (int)(rnd() % (unsigned)(cap - m - 8));
    for (i = m; i < n; i++) buf[i] = "ab{}[]\\\""[rnd() % 8];
    memcpy(buf + n, "\"]}\n", 4), n += 4;
  } else { /* a real frame, mutated */
    const char *s = seeds[rnd() % (sizeof(seeds) / sizeof(seeds[0]))];
    int muts = (int)(rnd() % 6);
    n = (int)strlen(s);
    memcpy(buf, s, (size_t)n);
    while (muts-- > 0 && n > 0) {
      int at = (int)(rnd() % (unsigned)n), op = (int)(rnd() % 5);
      if (op == 0) buf[at] ^= (char)(1 << (rnd() % 8));
      else if (op == 1) n = at; /* truncate */
      else if (op == 2 && n < cap - 1) memmove(buf + at + 1, buf + at, (size_t)(n - at)), buf[at] = (char)rnd(), n++;
      else if (op == 3) memmove(buf + at, buf + at + 1, (size_t)(n - at - 1)), n--;
      else if (n * 2 < cap) memcpy(buf + n, buf, (size_t)n), n *= 2; /* duplicated */
    }
  }
  return n;
}

static void check_lines(void) {
  int start = 0, i;
  for (i = 0; i < wire_len; i++) {
    if (wire[i] != '\n') continue;
    if (ccm_json_check(wire + start, i - start) != NULL || wire[start] != '{') {
      printf("the link wrote a line that is not one JSON object: %.*s\n", i - start, wire + start);
      exit(1);
    }
    start = i + 1;
  }
  if (start != wire_len) {
    printf("the link left a line unfinished: %.*s\n", wire_len - start, wire + start);
    exit(1);
  }
}

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 10000, it;
  static char data[4096];
  rng = (argc > 2 ? (uint64_t)atoll(argv[2]) : 1) * 0x9E3779B97F4A7C15ULL | 1;
  for (it = 0; it < iterations; it++) {
    struct ccm link;
    int size = 50 + (int)(rnd() % 300), n = make_case(data, (int)sizeof(data) - 8), off = 0;
    char *frame = malloc((size_t)size), *copy;
    const char *t, *probe = "\n{\"id\":\"probe\",\"method\":\"Sum\",\"params\":[40,2]}\n";
    const char *want = "{\"id\":\"probe\",\"result\":42}\n";
    int tl;
    ccm_init(&link, frame, size, capture, NULL);
    ccm_export(&link, "Sum", sum, NULL);
    ccm_on(&link, "Shadow.Delta", delta, NULL);
    ccm_call(&link, "Sys.GetInfo", on_result, NULL, 100, NULL);
    ccm_call(&link, "Config.Get", on_result, NULL, 100, NULL);
    wire_len = 0;
    while (off < n) { /* random splits */
      int k = 1 + (int)(rnd() % 64);
      if (k > n - off) k = n - off;
      ccm_feed(&link, data + off, k);
      off += k;
    }
    ccm_feed(&link, probe, (int)strlen(probe));
    check_lines();
    if (wire_len < (int)strlen(want) || memcmp(wire + wire_len - strlen(want), want, strlen(want)) != 0) {
      printf("case %ld: the link did not answer the probe after %d bytes; it wrote: %.*s\n", it, n, wire_len > 300 ? 300 : wire_len, wire + (wire_len > 300 ? wire_len - 300 : 0));
      exit(1);
    }
    ccm_poll(&link, 1000);
    /* the JSON functions on the raw bytes, in an exactly sized block */
    copy = malloc((size_t)n + 1);
    memcpy(copy, data, (size_t)n);
    if (ccm_json_check(copy, n) == NULL) {
      const char *k, *v;
      int kl, vl, ty, o = 0, guard = 0;
      char out[32];
      ccm_json_find(copy, n, "$.params[1]", &t, &tl);
      ccm_json_find(copy, n, "$[0].a.b[3]", &t, &tl);
      while ((o = ccm_json_next(copy, n, o, &k, &kl, &v, &vl, &ty)) != 0 && guard++ < 10000)
        if (ty == CCM_TOK_STRING) ccm_json_unescape(v, vl, out, (int)sizeof(out));
    } else { /* invalid input must not crash them either */
      ccm_json_find(copy, n, "$.id", &t, &tl);
      ccm_json_find(copy, n, "$[2]", &t, &tl);
    }
    free(copy);
    free(frame);
  }
  printf("fuzz: %ld cases, no crash, every line valid, the link always answered\n", iterations);
  return 0;
}
