/* The smart lamp's application (see lamp.h). No libc: it runs bare-metal as it is. */
#include "lamp.h"

static const struct lamp_board *board;
static int on;
static long brightness = 100;
static char device[48];

static void say(const char *a, const char *b) {
  static char line[96];
  int n = 0;
  while (*a && n < 60) line[n++] = *a++;
  while (b && *b && n < (int)sizeof(line) - 1) line[n++] = *b++;
  line[n] = 0;
  if (board->log) board->log(line);
}

static int text_is(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

static void report(struct ccm *c) {
  ccm_shadow_report(c, "{\"on\":%B,\"brightness\":%ld}", on, brightness);
}

/* Apply whatever of {"on","brightness"} the JSON object holds; 1 if it held anything. */
static int apply(const char *json, int len) {
  struct ccm_req r;
  int flag, changed = 0;
  long level;
  r.params = json, r.params_len = len;
  if (ccm_arg_bool(&r, "$.on", &flag)) on = flag, changed = 1;
  if (ccm_arg_long(&r, "$.brightness", &level) && level >= 0 && level <= 100) brightness = level, changed = 1;
  board->led(on);
  say(on ? "lamp: ON" : "lamp: off", NULL);
  return changed;
}

static void sum(struct ccm_req *r) {
  long a, b;
  if (!ccm_arg_long(r, "$[0]", &a) || !ccm_arg_long(r, "$[1]", &b)) {
    ccm_error(r, CCM_INVALID_PARAMS, "expected [a, b]: two integers");
    return;
  }
  ccm_result(r, "%ld", a + b);
}

static void lamp_set(struct ccm_req *r) {
  if (!apply(r->params, r->params_len)) {
    ccm_error(r, CCM_INVALID_PARAMS, "expected {\"on\": bool, \"brightness\": 0..100}");
    return;
  }
  report(r->ctx);
  ccm_result(r, "{\"on\":%B,\"brightness\":%ld}", on, brightness);
}

static void shadow_delta(struct ccm_req *r) {
  apply(r->params, r->params_len);
  report(r->ctx);
}

static void mqtt_message(struct ccm_req *r) {
  char topic[32], message[16];
  if (!ccm_arg_str(r, "$.topic", topic, sizeof(topic)) || !ccm_arg_str(r, "$.message", message, sizeof(message)))
    return;
  if (text_is(message, "toggle")) on = !on;
  else if (text_is(message, "on")) on = 1;
  else if (text_is(message, "off")) on = 0;
  else return;
  board->led(on);
  say(on ? "lamp: ON (mqtt)" : "lamp: off (mqtt)", NULL);
  report(r->ctx);
  ccm_mqtt_pub(r->ctx, "lamp/status", on ? "on" : "off", 0, NULL, NULL);
}

static void got_info(struct ccm *c, const struct ccm_result *res, void *ud) {
  struct ccm_req r;
  (void)c, (void)ud;
  r.params = res->json, r.params_len = res->len;
  if (res->error == 0 && ccm_arg_str(&r, "$.device_id", device, sizeof(device))) say("talking to CCM ", device);
}

static void ccm_booted(struct ccm_req *r) {
  say("CCM up: ", NULL);
  ccm_mqtt_sub(r->ctx, "lamp/cmd", 1, NULL, NULL);
  report(r->ctx);
}

void lamp_start(struct ccm *c, const struct lamp_board *b, const char *fw_version) {
  board = b;
  ccm_set_info(c, fw_version, b->arch, "lamp");
  ccm_export(c, "Sum", sum, NULL);
  ccm_export(c, "Lamp.Set", lamp_set, NULL);
  ccm_on(c, "Shadow.Delta", shadow_delta, NULL);
  ccm_on(c, "MQTT.Message", mqtt_message, NULL);
  ccm_on(c, "Sys.Init", ccm_booted, NULL);
  board->led(on);
  ccm_sys_getinfo(c, got_info, NULL);
  ccm_mqtt_sub(c, "lamp/cmd", 1, NULL, NULL);
}
