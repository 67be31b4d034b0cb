/* ccm.h — the host side of the CCM link, in C (docs/protocol.md, the UART link).
 *
 * Portable C99 for microcontrollers: no heap, no libc (only <stddef.h> <stdint.h> <stdarg.h>),
 * no recursion over input. The application feeds it the bytes its UART received and gives it one
 * function that writes bytes to the UART, so it fits any driver (polled, interrupt, DMA). On an AVR
 * (Arduino, host_lib/arduino) its own strings stay in flash (avr-libc's <avr/pgmspace.h>), so it needs
 * a few hundred bytes of RAM besides the frame buffer.
 *
 *   static char frame[512];
 *   static struct ccm link;
 *
 *   static int uart_write(const char *buf, int len, void *ud) { ... return len; }
 *
 *   static void sum(struct ccm_req *r) {
 *     long a, b;
 *     if (!ccm_arg_long(r, "$[0]", &a) || !ccm_arg_long(r, "$[1]", &b))
 *       ccm_error(r, CCM_INVALID_PARAMS, "expected [a, b]");
 *     else
 *       ccm_result(r, "%ld", a + b);
 *   }
 *
 *   ccm_init(&link, frame, sizeof(frame), uart_write, NULL);
 *   ccm_set_info(&link, "1.0", "stm32", "lamp");
 *   ccm_export(&link, "Sum", sum, NULL);
 *   for (;;) {
 *     ccm_feed(&link, rx, n);              // whatever the UART received, any split
 *     ccm_poll(&link, millis());           // expires calls that were not answered in time
 *   }
 *
 * Frames are newline-delimited JSON-RPC 2.0, compact, with no "jsonrpc" member — the same bytes
 * mjson and host_lib (Python) put on the wire. Handlers run inside ccm_feed(); call every ccm_*
 * function from one context (the main loop), not from an interrupt handler.
 */
#ifndef CCM_H
#define CCM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __AVR__ /* an Arduino Uno has 2 KiB of RAM: smaller tables unless asked for */
#define CCM_SMALL_RAM 1
#else
#define CCM_SMALL_RAM 0
#endif
#ifndef CCM_MAX_METHODS
#define CCM_MAX_METHODS (CCM_SMALL_RAM ? 8 : 12) /* exported methods and notification handlers */
#endif
#ifndef CCM_MAX_PENDING
#define CCM_MAX_PENDING 4 /* calls to the CCM waiting for their answer */
#endif
#ifndef CCM_OUT_CHUNK
#define CCM_OUT_CHUNK (CCM_SMALL_RAM ? 32 : 64) /* output is staged in chunks of this size before the write function */
#endif
/* %g and ccm_arg_double. Where double is not in hardware (AVR, Cortex-M0/M3/M4, ESP32, RISC-V without D) they
 * are off unless asked for (-DCCM_ENABLE_DOUBLE=1): the compiler's soft-float routines would come with every
 * ccm_printf, used or not — the Cortex-M3 lamp's image 8.1 KB without them, 10.9 KB with. */
#ifndef CCM_ENABLE_DOUBLE
#if (defined(__ARM_FP) && (__ARM_FP & 8)) || defined(__x86_64__) || defined(__i386__) || \
    (defined(__riscv_flen) && __riscv_flen >= 64)
#define CCM_ENABLE_DOUBLE 1 /* a PC, a Cortex-M7 or A, 64-bit ARM */
#else
#define CCM_ENABLE_DOUBLE 0
#endif
#endif
#define CCM_MAX_DEPTH 32 /* nesting levels of a frame, as the CCM accepts */

/* JSON-RPC 2.0 error codes, and the CCM's server errors (docs/protocol.md, the UART link). */
#define CCM_PARSE_ERROR (-32700)
#define CCM_INVALID_REQUEST (-32600)
#define CCM_METHOD_NOT_FOUND (-32601)
#define CCM_INVALID_PARAMS (-32602)
#define CCM_INTERNAL_ERROR (-32603)
#define CCM_TIMEOUT (-32000)
#define CCM_NOT_CONNECTED (-32001)
#define CCM_QUEUE_FULL (-32002)

/* Token types returned by ccm_json_find / ccm_json_next. */
enum { CCM_TOK_INVALID, CCM_TOK_STRING, CCM_TOK_NUMBER, CCM_TOK_TRUE, CCM_TOK_FALSE,
       CCM_TOK_NULL, CCM_TOK_OBJECT, CCM_TOK_ARRAY };

struct ccm;

/* Writes len bytes to the UART; returns what it wrote (the library does not retry). */
typedef int (*ccm_write_fn)(const char *buf, int len, void *userdata);

/* One incoming request or notification, valid while its handler runs. */
struct ccm_req {
  struct ccm *ctx;
  const char *method; /* the method name, not NUL-terminated */
  int method_len;
  const char *params; /* the params JSON text ("null" when absent) */
  int params_len;
  const char *id; /* the id's JSON text, NULL for a notification */
  int id_len;
  void *userdata; /* as given to ccm_export */
  int answered;
};
typedef void (*ccm_handler)(struct ccm_req *r);

/* The answer to one of our calls: error 0 and the result's JSON text, or a JSON-RPC error
 * (its code, and the error object's JSON text), or CCM_TIMEOUT when nothing came in time. */
struct ccm_result {
  int error;
  const char *json;
  int len;
};
typedef void (*ccm_result_fn)(struct ccm *c, const struct ccm_result *res, void *userdata);

struct ccm_stats {
  uint32_t frames;    /* frames processed */
  uint32_t errors;    /* frames answered (or dropped) as malformed */
  uint32_t overflows; /* frames longer than the frame buffer */
  uint32_t timeouts;  /* calls that got no answer in time */
};

struct ccm {
  char *buf; /* the frame being received */
  int size, len;
  int depth;
  uint8_t state, str; /* str: inside a string (bit 0), after its backslash (bit 1) */
  ccm_write_fn write;
  void *write_ud;
  char out[CCM_OUT_CHUNK];
  int out_len, written;
  struct {
    const char *name;
    ccm_handler fn;
    void *userdata;
  } methods[CCM_MAX_METHODS];
  int n_methods;
  struct {
    uint32_t id, deadline;
    ccm_result_fn fn;
    void *userdata;
  } pending[CCM_MAX_PENDING];
  uint32_t next_id, now;
  const char *fw_version, *arch, *app, *fw_id;
  struct ccm_stats stats;
};

/* -- the link ----------------------------------------------------------------------------------- */
void ccm_init(struct ccm *c, char *frame_buf, int frame_buf_size, ccm_write_fn write, void *userdata);
/* What Sys.Info answers: {"fw_version","arch","fw_id","app"} (fw_id NULL: the id the build stamped into
 * the image, pc/fwid.py; "" when it was not stamped). */
void ccm_set_info(struct ccm *c, const char *fw_version, const char *arch, const char *app);
/* Export a method, or handle a notification (Shadow.Delta, MQTT.Message, Cloud.Status, Sys.Init).
 * `name` must stay valid. Returns 0, or -1 when the table (CCM_MAX_METHODS) is full. */
int ccm_export(struct ccm *c, const char *name, ccm_handler fn, void *userdata);
#define ccm_on ccm_export
/* Bytes from the UART, split anyhow. Handlers and result callbacks run from here. */
void ccm_feed(struct ccm *c, const void *data, int len);
/* The clock, in ms (any origin, wraps): expires calls whose timeout has passed. */
void ccm_poll(struct ccm *c, uint32_t now_ms);

/* -- answering (inside a handler) ---------------------------------------------------------------- */
/* {"id":…,"result":<fmt>}. fmt NULL answers null. A handler that returns without answering
 * answers null; a notification's answers are swallowed. */
void ccm_result(struct ccm_req *r, const char *fmt, ...);
void ccm_error(struct ccm_req *r, int code, const char *message);

/* Typed params: path as in ccm_json_find, relative to params ("$[0]", "$.on").
 * Return 1 and set *out when present with that type, else 0. */
int ccm_arg_long(const struct ccm_req *r, const char *path, long *out);
#if CCM_ENABLE_DOUBLE
int ccm_arg_double(const struct ccm_req *r, const char *path, double *out);
#elif defined(__GNUC__) && !defined(__clang__) /* a call says what to do, not just "implicit declaration" */
int ccm_arg_double(const struct ccm_req *r, const char *path, double *out)
    __attribute__((error("ccm_arg_double is off where double is not in hardware: build with -DCCM_ENABLE_DOUBLE=1")));
#endif
int ccm_arg_bool(const struct ccm_req *r, const char *path, int *out);
/* Unescaped into out (NUL-terminated); 0 when missing, not a string, or longer than size-1. */
int ccm_arg_str(const struct ccm_req *r, const char *path, char *out, int size);

/* -- calling the CCM ----------------------------------------------------------------------------- */
/* {"id":N,"method":…,"params":<fmt>} (params_fmt NULL: no params). fn gets the answer, or
 * CCM_TIMEOUT after timeout_ms of ccm_poll's clock. Returns the id, or -1 when CCM_MAX_PENDING
 * calls are already waiting (nothing is sent). fn may be NULL: the answer is ignored. */
int ccm_call(struct ccm *c, const char *method, ccm_result_fn fn, void *userdata, uint32_t timeout_ms,
             const char *params_fmt, ...);
/* {"method":…,"params":<fmt>}: no id, no answer. */
void ccm_notify(struct ccm *c, const char *method, const char *params_fmt, ...);

/* The CCM's services (docs/protocol.md, the UART link). Reports and publishes without a callback are notifications. */
#define ccm_shadow_report(c, ...) ccm_notify((c), "Shadow.Report", __VA_ARGS__)
#define ccm_shadow_get(c, fn, ud) ccm_call((c), "Shadow.Get", (fn), (ud), 5000, NULL)
#define ccm_sys_getinfo(c, fn, ud) ccm_call((c), "Sys.GetInfo", (fn), (ud), 5000, NULL)
int ccm_config_get(struct ccm *c, const char *key, ccm_result_fn fn, void *userdata);
/* message is sent as a JSON string. With fn: answered once sent (qos 0) or acknowledged (qos 1). */
int ccm_mqtt_pub(struct ccm *c, const char *topic, const char *message, int qos, ccm_result_fn fn,
                 void *userdata);
int ccm_mqtt_sub(struct ccm *c, const char *topic, int qos, ccm_result_fn fn, void *userdata);

/* -- JSON ---------------------------------------------------------------------------------------- */
/* printf into the link: %d %i %u %ld %lu %x %s %.*s (raw), %Q %.*Q (JSON string, escaped),
 * %B (int as true/false), %g (double, up to 9 significant digits; null without CCM_ENABLE_DOUBLE), %%.
 * Returns bytes written. */
int ccm_printf(struct ccm *c, const char *fmt, ...);
int ccm_vprintf(struct ccm *c, const char *fmt, va_list ap);
/* 0 if s[0..len) is one valid JSON value (UTF-8, finite numbers, nesting ≤ CCM_MAX_DEPTH), else a
 * message naming the problem. On an AVR the library keeps its messages in flash: read this one with
 * pgm_read_byte() (Arduino: Serial.print((const __FlashStringHelper *)msg)). */
const char *ccm_json_check(const char *s, int len);
/* Find a value by path: "$" the whole, "$.key", "$[3]", "$.a[0].b". Returns its CCM_TOK_ type and
 * sets *tok and *tok_len to its text, or CCM_TOK_INVALID when absent. s must be valid JSON. */
int ccm_json_find(const char *s, int len, const char *path, const char **tok, int *tok_len);
/* Iterate an object's members or an array's elements: start with offset 0; returns the next offset
 * (0 at the end) and sets key (NULL for arrays) and value. */
int ccm_json_next(const char *s, int len, int offset, const char **key, int *key_len, const char **val,
                  int *val_len, int *val_type);
/* Unescape a JSON string token (quotes included) into out; returns the length, or -1. */
int ccm_json_unescape(const char *tok, int tok_len, char *out, int size);
/* Compare a JSON string token with a C string (escapes decoded). 1 if equal. */
int ccm_json_streq(const char *tok, int tok_len, const char *s);

#ifdef __cplusplus
}
#endif
#endif /* CCM_H */
