/* SPDX-License-Identifier: MIT */
/* systemd's notification protocol without libsystemd: READY=1, RELOADING=1,
 * STOPPING=1, STATUS= and the watchdog, as datagrams to $NOTIFY_SOCKET. */
#ifndef HOSTDEVD_SDNOTIFY_H
#define HOSTDEVD_SDNOTIFY_H

#include <stdint.h>

struct event_base;

/* Sends `msg` (newline-separated assignments) to $NOTIFY_SOCKET. Returns 0,
 * 1 when there is no socket to send to, or -errno. */
int sd_notify_send(const char *msg);

/* Like sd_notify_send, printf-style. */
int sd_notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval systemd asks for ($WATCHDOG_USEC, when
 * $WATCHDOG_PID is unset or ours), in microseconds; 0 for none. */
uint64_t sd_watchdog_usec(void);

/* Sends WATCHDOG=1 from the event loop every half interval while the loop
 * runs; nothing when no watchdog is asked for. Returns 0 or -errno. */
int sd_watchdog_start(struct event_base *base);
void sd_watchdog_stop(void);

#endif
