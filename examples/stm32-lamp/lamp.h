/* The smart lamp, on host_lib/c: the application both builds share (STM32 firmware, Linux program).
 *
 * It exports Sum and Lamp.Set, follows the device shadow (Shadow.Delta → switch → Shadow.Report),
 * takes commands published on lamp/cmd ("on", "off", "toggle") and answers them on lamp/status,
 * and reports its state again whenever the CCM (re)boots (Sys.Init). */
#ifndef LAMP_H
#define LAMP_H

#include "ccm.h"

struct lamp_board {
  const char *arch;                   /* what Sys.Info says it runs on */
  void (*led)(int on);                /* switch the light */
  void (*log)(const char *line);      /* a line for whoever watches (may be NULL) */
};

/* Export the lamp's methods on the link and ask the CCM who it is. */
void lamp_start(struct ccm *c, const struct lamp_board *board, const char *fw_version);

#endif
