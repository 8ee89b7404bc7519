/* SPDX-License-Identifier: MIT */
/* systemd notifications: one datagram per message to $NOTIFY_SOCKET. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "sdnotify.h"

int
sd_notify_send(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	ssize_t n;
	int fd, err = 0;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return 1;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path));
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, len);
	if (n < 0)
		err = -errno;
	close(fd);
	return err;
}

int
sd_notify_sendf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return sd_notify_send(buf);
}

uint64_t
sd_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long v;
	char *end;

	if (usec == NULL || getenv("NOTIFY_SOCKET") == NULL)
		return 0;
	if (pid && strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	errno = 0;
	v = strtoull(usec, &end, 10);
	if (errno || *end || end == usec)
		return 0;
	return v;
}

static struct event *watchdog_ev;

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify_send("WATCHDOG=1");
}

int
sd_watchdog_start(struct event_base *base)
{
	uint64_t usec = sd_watchdog_usec() / 2;
	struct timeval tv;

	if (usec == 0 || watchdog_ev)
		return 0;
	watchdog_ev = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
	if (watchdog_ev == NULL)
		return -ENOMEM;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	if (event_add(watchdog_ev, &tv) < 0) {
		sd_watchdog_stop();
		return -EINVAL;
	}
	sd_notify_send("WATCHDOG=1");
	return 0;
}

void
sd_watchdog_stop(void)
{
	if (watchdog_ev)
		event_free(watchdog_ev);
	watchdog_ev = NULL;
}
