/* The smart lamp on an Arduino (an Uno's ATmega328P): the manual's host example with CcmBridge.
 *
 * Wire the board's UART (pins 0/1, the one Serial uses) to the CCM's host UART at 115200 8N1. The lamp
 * exports Sum, follows the device shadow ({"on": bool, "brightness": 0..100} in desired → the LED on
 * pin 13 → Shadow.Report), takes "on"/"off"/"toggle" published on lamp/cmd and answers on lamp/status,
 * and reports its state again whenever the CCM (re)boots (Sys.Init).
 *
 * Serial is the CCM's: nothing else may print on it. */
#include <ccm.h>

static char frame[160]; /* the longest frame the lamp takes; longer ones are refused whole */
static struct ccm link;
static bool on;
static long brightness = 100;

static int uart_write(const char *buf, int len, void *ud) {
  (void)ud;
  return Serial.write((const uint8_t *)buf, len);
}

static void report(struct ccm *c) {
  ccm_shadow_report(c, "{\"on\":%B,\"brightness\":%ld}", on, brightness);
}

static void show() {
  digitalWrite(LED_BUILTIN, on ? HIGH : LOW);
}

static void sum(struct ccm_req *r) {
  long a, b;
  if (!ccm_arg_long(r, "$[0]", &a) || !ccm_arg_long(r, "$[1]", &b))
    ccm_error(r, CCM_INVALID_PARAMS, "expected [a, b]: two integers");
  else
    ccm_result(r, "%ld", a + b);
}

static void shadow_delta(struct ccm_req *r) {
  int flag;
  long level;
  if (ccm_arg_bool(r, "$.on", &flag)) on = flag;
  if (ccm_arg_long(r, "$.brightness", &level) && level >= 0 && level <= 100) brightness = level;
  show();
  report(r->ctx);
}

static void mqtt_message(struct ccm_req *r) {
  char message[8];
  if (!ccm_arg_str(r, "$.message", message, sizeof(message))) return;
  if (!strcmp(message, "toggle")) on = !on;
  else if (!strcmp(message, "on")) on = true;
  else if (!strcmp(message, "off")) on = false;
  else return;
  show();
  report(r->ctx);
  ccm_mqtt_pub(r->ctx, "lamp/status", on ? "on" : "off", 0, NULL, NULL);
}

static void ccm_booted(struct ccm_req *r) {
  ccm_mqtt_sub(r->ctx, "lamp/cmd", 1, NULL, NULL);
  report(r->ctx);
}

void setup() {
  pinMode(LED_BUILTIN, OUTPUT);
  Serial.begin(115200);
  ccm_init(&link, frame, sizeof(frame), uart_write, NULL);
  ccm_set_info(&link, "1.0", "avr", "lamp");
  ccm_export(&link, "Sum", sum, NULL);
  ccm_on(&link, "Shadow.Delta", shadow_delta, NULL);
  ccm_on(&link, "MQTT.Message", mqtt_message, NULL);
  ccm_on(&link, "Sys.Init", ccm_booted, NULL);
  show();
  ccm_mqtt_sub(&link, "lamp/cmd", 1, NULL, NULL);
  report(&link);
}

void loop() {
  char buf[16];
  int n = 0;
  while (n < (int)sizeof(buf) && Serial.available() > 0) buf[n++] = Serial.read();
  if (n) ccm_feed(&link, buf, n);
  ccm_poll(&link, millis());
}
