/* Unit tests of host_lib/c: exact frames on the wire for every path. Run by tests/test_host_c.py. */
#include <stdio.h>
#include <string.h>

#include "ccm.h"

static char wire[8192];
static int wire_len, writes, failures;

static int capture(const char *buf, int len, void *ud) {
  (void)ud;
  if (wire_len + len < (int)sizeof(wire)) memcpy(wire + wire_len, buf, (size_t)len), wire_len += len;
  writes++;
  return len;
}

static void reset(void) {
  wire_len = 0, writes = 0;
  wire[0] = 0;
}

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
      failures++;                                                     \
    }                                                                 \
  } while (0)

static void expect_wire(const char *want, int line) {
  wire[wire_len] = 0;
  if (strcmp(wire, want) != 0) {
    printf("FAIL line %d:\n  want %s\n  got  %s\n", line, want, wire);
    failures++;
  }
  reset();
}
#define EXPECT(want) expect_wire(want, __LINE__)

static void feed(struct ccm *c, const char *s) { ccm_feed(c, s, (int)strlen(s)); }

/* -- handlers ------------------------------------------------------------------------------------- */
static void sum(struct ccm_req *r) {
  long a, b;
  if (!ccm_arg_long(r, "$[0]", &a) || !ccm_arg_long(r, "$[1]", &b)) {
    ccm_error(r, CCM_INVALID_PARAMS, "expected [a, b]");
    return;
  }
  ccm_result(r, "%ld", a + b);
}

static int lamp_on = -1;
static void delta(struct ccm_req *r) {
  int on;
  if (ccm_arg_bool(r, "$.on", &on)) {
    lamp_on = on;
    ccm_shadow_report(r->ctx, "{%Q:%B}", "on", on);
  }
}

static void silent(struct ccm_req *r) { (void)r; }

static struct ccm_result last;
static char last_json[256];
static int results;
static void on_result(struct ccm *c, const struct ccm_result *res, void *ud) {
  (void)c;
  *(int *)ud += 1;
  last = *res;
  memcpy(last_json, res->json, (size_t)res->len);
  last_json[res->len] = 0;
  last.json = last_json;
  results++;
}

static struct ccm link;
static char frame_buf[128];

static void setup(void) {
  ccm_init(&link, frame_buf, sizeof(frame_buf), capture, NULL);
  ccm_set_info(&link, "1.2.3", "test", "lamp");
  ccm_export(&link, "Sum", sum, NULL);
  ccm_on(&link, "Shadow.Delta", delta, NULL);
  ccm_export(&link, "Quiet", silent, NULL);
  reset();
}

static void test_requests(void) {
  setup();
  feed(&link, "{\"id\":1,\"method\":\"Sum\",\"params\":[2,3]}\n");
  CHECK(writes == 1); /* a short frame is one write */
  EXPECT("{\"id\":1,\"result\":5}\n");
  feed(&link, "{\"id\": \"a\", \"method\": \"Sum\", \"params\": [-7, 3]}\r\n");
  EXPECT("{\"id\":\"a\",\"result\":-4}\n");
  feed(&link, "{\"jsonrpc\":\"2.0\",\"method\":\"Sum\",\"params\":[1,1],\"id\":9}");
  EXPECT("{\"id\":9,\"result\":2}\n"); /* no newline: the frame ends when the object closes */
  feed(&link, "{\"id\":2,\"method\":\"Sum\",\"params\":[1]}\n");
  EXPECT("{\"id\":2,\"error\":{\"code\":-32602,\"message\":\"expected [a, b]\"}}\n");
  feed(&link, "{\"id\":3,\"method\":\"Nope\"}\n");
  EXPECT("{\"id\":3,\"error\":{\"code\":-32601,\"message\":\"method not found\"}}\n");
  feed(&link, "{\"method\":\"Nope\"}\n{\"method\":\"Sum\",\"params\":[1,2]}\n");
  EXPECT(""); /* notifications get no answer, not even an error */
  feed(&link, "{\"id\":4,\"method\":\"Quiet\"}\n");
  EXPECT("{\"id\":4,\"result\":null}\n");
  feed(&link, "{\"id\":null,\"method\":\"Sum\",\"params\":[0,0]}\n");
  EXPECT("{\"id\":null,\"result\":0}\n");
  feed(&link, "{\"id\":5,\"method\":\"RPC.List\"}\n");
  EXPECT("{\"id\":5,\"result\":[\"Sum\",\"Shadow.Delta\",\"Quiet\",\"RPC.List\",\"Sys.Info\"]}\n");
  feed(&link, "{\"id\":6,\"method\":\"Sys.Info\"}\n");
  EXPECT("{\"id\":6,\"result\":{\"fw_version\":\"1.2.3\",\"arch\":\"test\",\"fw_id\":\"\",\"app\":\"lamp\"}}\n");
  /* byte by byte, noise before the frame, two frames back to back */
  {
    const char *s = "xx\r\n{\"id\":7,\"method\":\"Sum\",\"params\":[20,22]}{\"id\":8,\"method\":\"Sum\",\"params\":[1,2]}";
    int i;
    for (i = 0; s[i]; i++) ccm_feed(&link, s + i, 1);
  }
  EXPECT("{\"id\":7,\"result\":42}\n{\"id\":8,\"result\":3}\n");
  feed(&link, "{\"method\":\"Shadow.Delta\",\"params\":{\"on\":true}}\n");
  CHECK(lamp_on == 1);
  EXPECT("{\"method\":\"Shadow.Report\",\"params\":{\"on\":true}}\n");
  feed(&link, "{\"id\":10,\"method\":\"Sum\",\"params\":[9223372036854775807999,1]}\n");
  EXPECT("{\"id\":10,\"error\":{\"code\":-32602,\"message\":\"expected [a, b]\"}}\n");
  CHECK(link.stats.errors == 0);
}

static void test_bad_frames(void) {
  char deep[80];
  int i;
  setup();
  feed(&link, "{\"id\":1,\"method\":}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: unexpected character\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"Sum\"\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: incomplete frame\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"S\xc3\x28\"}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: invalid UTF-8\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"\xed\xa0\x80\"}\n"); /* an encoded surrogate */
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: invalid UTF-8\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"\\ud800x\"}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: lone surrogate escape\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"Sum\",\"params\":[1e999,1]}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: number out of range\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"Sum\",\"params\":[1.7976931348623157e308,1]}\n");
  EXPECT("{\"id\":1,\"error\":{\"code\":-32602,\"message\":\"expected [a, b]\"}}\n");
  feed(&link, "{\"id\":1,\"method\":\"Sum\",\"params\":[1.8e308,1]}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: number out of range\"}}\n");
  for (i = 0; i < 33; i++) deep[i] = '[';
  for (i = 33; i < 66; i++) deep[i] = ']';
  deep[66] = '\n', deep[67] = 0;
  feed(&link, deep);
  EXPECT("{\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse error: nesting deeper than 32\"}}\n");
  feed(&link, "[{\"id\":1,\"method\":\"Sum\",\"params\":[1,2]}]\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32600,\"message\":\"invalid request: batches are not supported\"}}\n");
  feed(&link, "{\"id\":{\"a\":1},\"method\":\"Sum\",\"params\":[1,2]}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32600,\"message\":\"invalid request\"}}\n");
  feed(&link, "{\"id\":3,\"method\":5}\n");
  EXPECT("{\"id\":3,\"error\":{\"code\":-32600,\"message\":\"invalid request\"}}\n");
  feed(&link, "{\"foo\":1}\n");
  EXPECT("{\"id\":null,\"error\":{\"code\":-32600,\"message\":\"invalid request\"}}\n");
  /* oversize: one error, discarded to its end, and the next frame is served */
  {
    char big[400];
    memset(big, 'a', sizeof(big));
    feed(&link, "{\"id\":1,\"method\":\"Sum\",\"params\":[1,2],\"pad\":\"");
    ccm_feed(&link, big, sizeof(big));
    feed(&link, "\"}{\"id\":2,\"method\":\"Sum\",\"params\":[1,2]}\n");
  }
  EXPECT("{\"id\":null,\"error\":{\"code\":-32600,\"message\":\"frame too large: 129+ bytes, the frame buffer is "
         "128\"}}\n{\"id\":2,\"result\":3}\n");
  CHECK(link.stats.overflows == 1);
  /* an oversize frame cut by a newline, with a brace in a string */
  {
    char big[300];
    memset(big, '{', sizeof(big));
    feed(&link, "{\"x\":\"");
    ccm_feed(&link, big, sizeof(big));
    feed(&link, "\n{\"id\":3,\"method\":\"Sum\",\"params\":[2,2]}\n");
  }
  EXPECT("{\"id\":null,\"error\":{\"code\":-32600,\"message\":\"frame too large: 129+ bytes, the frame buffer is "
         "128\"}}\n{\"id\":3,\"result\":4}\n");
}

static void test_calls(void) {
  int n = 0, id, i;
  setup();
  ccm_poll(&link, 1000);
  id = ccm_sys_getinfo(&link, on_result, &n);
  CHECK(id == 1);
  EXPECT("{\"id\":1,\"method\":\"Sys.GetInfo\"}\n");
  feed(&link, "{\"id\":1,\"result\":{\"device_id\":\"ccm-1\",\"fw_version\":\"2.0\"}}\n");
  CHECK(n == 1 && last.error == 0);
  CHECK(strcmp(last.json, "{\"device_id\":\"ccm-1\",\"fw_version\":\"2.0\"}") == 0);
  EXPECT("");
  ccm_config_get(&link, "mqtt.server", on_result, &n);
  EXPECT("{\"id\":2,\"method\":\"Config.Get\",\"params\":{\"key\":\"mqtt.server\"}}\n");
  feed(&link, "{\"id\":2,\"error\":{\"code\":-32003,\"message\":\"forbidden\"}}\n");
  CHECK(n == 2 && last.error == -32003);
  feed(&link, "{\"id\":2,\"result\":1}\n"); /* a second answer to the same id is ignored */
  CHECK(n == 2);
  ccm_mqtt_pub(&link, "t1", "say \"hi\"\n", 0, NULL, NULL);
  EXPECT("{\"method\":\"MQTT.Pub\",\"params\":{\"topic\":\"t1\",\"message\":\"say \\\"hi\\\"\\n\"}}\n");
  ccm_mqtt_pub(&link, "t1", "x", 1, on_result, &n);
  EXPECT("{\"id\":3,\"method\":\"MQTT.Pub\",\"params\":{\"topic\":\"t1\",\"message\":\"x\",\"qos\":1}}\n");
  ccm_mqtt_sub(&link, "lamp/#", 0, NULL, NULL);
  EXPECT("{\"id\":4,\"method\":\"MQTT.Sub\",\"params\":{\"topic\":\"lamp/#\"}}\n");
  ccm_shadow_report(&link, "{%Q:%d,%Q:%Q}", "brightness", 40, "mode", "warm");
  EXPECT("{\"method\":\"Shadow.Report\",\"params\":{\"brightness\":40,\"mode\":\"warm\"}}\n");
  /* calls 3 and 4 are still waiting: two more fill the table, the next is refused */
  CHECK(ccm_shadow_get(&link, on_result, &n) == 5);
  CHECK(ccm_call(&link, "X", on_result, &n, 100, NULL) == 6);
  reset();
  CHECK(ccm_call(&link, "Y", on_result, &n, 100, NULL) == -1);
  EXPECT("");
  ccm_poll(&link, 1099);
  CHECK(n == 2);
  ccm_poll(&link, 1100); /* X times out after 100 ms */
  CHECK(n == 3 && last.error == CCM_TIMEOUT);
  ccm_poll(&link, 1000 + 10000); /* then the rest */
  CHECK(n == 5 && link.stats.timeouts == 4);
  for (i = 0; i < CCM_MAX_PENDING; i++) CHECK(link.pending[i].fn == NULL);
  /* the clock wraps */
  ccm_poll(&link, 0xFFFFFFF0u);
  ccm_call(&link, "Z", on_result, &n, 100, NULL);
  ccm_poll(&link, 0x00000010u);
  CHECK(n == 5);
  ccm_poll(&link, 0x00000054u);
  CHECK(n == 6 && last.error == CCM_TIMEOUT);
}

static void test_json(void) {
  const char *doc = "{\"a\":{\"b\":[1,{\"c\":\"x\\u00e9\\ud83d\\ude00\"}],\"k\\\"q\":true},\"n\":-1.5e2, \"z\" : null}";
  const char *t, *k, *v;
  char s[32];
  int n, kl, vl, type, off = 0, count = 0;
  struct ccm_req r;
  CHECK(ccm_json_check(doc, (int)strlen(doc)) == NULL);
  CHECK(ccm_json_find(doc, (int)strlen(doc), "$.a.b[1].c", &t, &n) == CCM_TOK_STRING);
  CHECK(ccm_json_unescape(t, n, s, sizeof(s)) == 7 && strcmp(s, "x\xc3\xa9\xf0\x9f\x98\x80") == 0);
  CHECK(ccm_json_unescape(t, n, s, 7) == -1); /* no room for the NUL */
  CHECK(ccm_json_find(doc, (int)strlen(doc), "$.a.k\"q", &t, &n) == CCM_TOK_TRUE);
  CHECK(ccm_json_find(doc, (int)strlen(doc), "$.a.b[2]", &t, &n) == CCM_TOK_INVALID);
  CHECK(ccm_json_find(doc, (int)strlen(doc), "$.z", &t, &n) == CCM_TOK_NULL);
  CHECK(ccm_json_find(doc, (int)strlen(doc), "$.n[0]", &t, &n) == CCM_TOK_INVALID);
  CHECK(ccm_json_find(doc, (int)strlen(doc), "$", &t, &n) == CCM_TOK_OBJECT && n == (int)strlen(doc));
  while ((off = ccm_json_next(doc, (int)strlen(doc), off, &k, &kl, &v, &vl, &type)) != 0) count++;
  CHECK(count == 3);
  r.params = doc, r.params_len = (int)strlen(doc);
  {
    double d = 0;
    long l = 0;
    CHECK(ccm_arg_double(&r, "$.n", &d) && d == -150.0);
    CHECK(!ccm_arg_long(&r, "$.n", &l));
    CHECK(ccm_arg_str(&r, "$.a.b[1].c", s, sizeof(s)));
    CHECK(!ccm_arg_str(&r, "$.z", s, sizeof(s)));
  }
  {
    const char *nums = "[0.5,1E+2,-0.001,12e-1,3,\"\\u0041\\u20ac\"]";
    double d = 0;
    r.params = nums, r.params_len = (int)strlen(nums);
    CHECK(ccm_arg_double(&r, "$[0]", &d) && d == 0.5);
    CHECK(ccm_arg_double(&r, "$[1]", &d) && d == 100.0);
    CHECK(ccm_arg_double(&r, "$[2]", &d) && d > -0.0010001 && d < -0.0009999);
    CHECK(ccm_arg_double(&r, "$[3]", &d) && d > 1.1999 && d < 1.2001);
    CHECK(ccm_arg_double(&r, "$[4]", &d) && d == 3.0);
    CHECK(ccm_arg_str(&r, "$[5]", s, sizeof(s)) && strcmp(s, "A\xe2\x82\xac") == 0); /* 1 and 3 bytes */
  }
  {
    const char *dup = "{\"on\":true,\"n\":[1,2],\"on\":false}"; /* a repeated key: the last, as the CCM reads it */
    int on = -1;
    r.params = dup, r.params_len = (int)strlen(dup);
    CHECK(ccm_arg_bool(&r, "$.on", &on) && on == 0);
    CHECK(ccm_json_find(dup, (int)strlen(dup), "$[0]", &t, &n) == CCM_TOK_INVALID); /* not an array */
    CHECK(ccm_json_find(dup, (int)strlen(dup), "$.n.x", &t, &n) == CCM_TOK_INVALID);  /* not an object */
  }
  { /* every problem the check names: each message is the one for its input */
    static const char *const bad[][2] = {
        {"[1,x]", "unexpected character"},
        {"\"\t\"", "control character in a string"},
        {"\"\\u12G4\"", "bad \\u escape"},
        {"\"\\ud800x\"", "lone surrogate escape"},
        {"\"\\q\"", "bad escape in a string"},
        {"\"\xed\xa0\x80\"", "invalid UTF-8"}, /* a surrogate, encoded */
        {"\"abc", "unterminated string"},
        {"-x", "bad number"},
        {"1.8e308", "number out of range"},
        {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "nesting deeper than 32"},
        {"{\"a\":1,}", "expected a key"},
        {"{\"a\" 1}", "expected ':'"},
        {"[1 2]", "expected ',' or a close"},
        {"[01]", "expected ',' or a close"},
        {"{\"a\":[1}", "expected ',' or a close"},
        {"[1,", "incomplete frame"},
        {"{} x", "data after the value"},
    };
    unsigned i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
      const char *why = ccm_json_check(bad[i][0], (int)strlen(bad[i][0]));
      if (why == NULL || strcmp(why, bad[i][1]) != 0) {
        printf("FAIL check %s: %s, not %s\n", bad[i][0], why ? why : "accepted", bad[i][1]);
        failures++;
      }
    }
  }
  CHECK(ccm_json_check("[1e-999, 0.0001e310, -0, 1E+2]", 30) == NULL);
  {
    const char *edge = "[1.7976931348623157e308, {}, [], \"\xf4\x8f\xbf\xbf\"]"; /* DBL_MAX, U+10FFFF */
    CHECK(ccm_json_check(edge, (int)strlen(edge)) == NULL);
  }
  CHECK(ccm_json_unescape("\"a\\qb\"", 6, s, sizeof(s)) == -1); /* a token that is not valid JSON */
}

static void test_printf(void) {
  setup();
  ccm_printf(&link, "%Q %.*Q %s %.*s %B %B %d %u %x %ld %%", "a\"\\\x01\n", 2, "xyz", "raw", 1, "pq", 1, 0, -12,
             7u, 255u, -2147483647L);
  ccm_printf(&link, "|%g|%g|%g|%g|%g|%g|%g", 5.0, -0.25, 1e-7, 123456789.0, 1e21, 0.1, 3.0 / 0.0 - 1);
  ccm_printf(&link, "|%y|100%"); /* an unknown conversion as is, a '%' at the end alone */
  wire[wire_len] = 0;
  if (strcmp(wire, "\"a\\\"\\\\\\u0001\\n\" \"xy\" raw p true false -12 7 ff -2147483647 %"
                   "|5|-0.25|1e-7|123456789|1e21|0.1|null|%y|100%") != 0 ||
      wire_len != (int)strlen(wire)) { /* nothing after the last '%', not even a NUL */
    printf("FAIL printf: %s\n", wire);
    failures++;
  }
  reset();
}

int main(void) {
  test_requests();
  test_bad_frames();
  test_calls();
  test_json();
  test_printf();
  printf(failures ? "%d FAILED\n" : "all passed\n", failures);
  return failures != 0;
}
