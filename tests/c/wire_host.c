/* A host on host_lib/c reading frames on stdin and writing them on stdout: tests/test_host_c.py puts
 * it and host_lib (Python) through the same script and compares the bytes they send. Lines on stdin
 * starting with "!" are commands: "!pub T M", "!report J", "!getinfo", "!sub T". */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ccm.h"

static int out(const char *buf, int len, void *ud) {
  (void)ud;
  return (int)fwrite(buf, 1, (size_t)len, stdout);
}

static void sum(struct ccm_req *r) {
  long a, b;
  if (!ccm_arg_long(r, "$[0]", &a) || !ccm_arg_long(r, "$[1]", &b)) {
    ccm_error(r, CCM_INVALID_PARAMS, "invalid params");
    return;
  }
  ccm_result(r, "%ld", a + b);
}

static void echo(struct ccm_req *r) { ccm_result(r, "%.*s", r->params_len, r->params); }
static void delta(struct ccm_req *r) { ccm_shadow_report(r->ctx, "%.*s", r->params_len, r->params); }

int main(void) {
  static char frame[4096], line[4096];
  static struct ccm link;
  ccm_init(&link, frame, sizeof(frame), out, NULL);
  ccm_set_info(&link, "1.0", "test", "wire");
  ccm_export(&link, "Sum", sum, NULL);
  ccm_export(&link, "Echo", echo, NULL);
  ccm_on(&link, "Shadow.Delta", delta, NULL);
  while (fgets(line, sizeof(line), stdin) != NULL) {
    char *sp;
    if (line[0] != '!') {
      ccm_feed(&link, line, (int)strlen(line));
    } else if (strncmp(line, "!pub ", 5) == 0 && (sp = strchr(line + 5, ' ')) != NULL) {
      *sp = 0;
      sp[strcspn(sp + 1, "\n") + 1] = 0;
      ccm_mqtt_pub(&link, line + 5, sp + 1, 0, NULL, NULL);
    } else if (strncmp(line, "!report ", 8) == 0) {
      ccm_shadow_report(&link, "%.*s", (int)strcspn(line + 8, "\n"), line + 8);
    } else if (strncmp(line, "!getinfo", 8) == 0) {
      ccm_sys_getinfo(&link, NULL, NULL);
    } else if (strncmp(line, "!sub ", 5) == 0) {
      line[strcspn(line, "\n")] = 0;
      ccm_mqtt_sub(&link, line + 5, 0, NULL, NULL);
    }
    fflush(stdout);
  }
  return 0;
}
