/* SPDX-License-Identifier: MIT */
/* Logging: levelled lines on stderr (or syslog), errno-appending variants. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "log.h"

static enum hdd_log_level log_level = HDD_LOG_INFO;
static int log_syslog;

static const char *const level_names[HDD_LOG_LEVEL_MAX] = {
	[HDD_LOG_ERR] = "error",
	[HDD_LOG_WARN] = "warn",
	[HDD_LOG_INFO] = "info",
	[HDD_LOG_DEBUG] = "debug",
};

void
log_init(enum hdd_log_level level, int use_syslog)
{
	log_level = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog("hostdevd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_set_level(enum hdd_log_level level)
{
	log_level = level;
}

enum hdd_log_level
log_get_level(void)
{
	return log_level;
}

int
log_level_from_string(const char *s)
{
	if (s == NULL)
		return -EINVAL;
	for (int i = 0; i < HDD_LOG_LEVEL_MAX; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return HDD_LOG_WARN;
	if (strcmp(s, "err") == 0)
		return HDD_LOG_ERR;
	return -EINVAL;
}

const char *
log_level_to_string(enum hdd_log_level level)
{
	if ((unsigned)level >= HDD_LOG_LEVEL_MAX)
		return "unknown";
	return level_names[level];
}

void
log_vmsg(enum hdd_log_level level, const char *token, const char *fmt, va_list ap)
{
	static const int prio[HDD_LOG_LEVEL_MAX] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];

	if ((unsigned)level >= HDD_LOG_LEVEL_MAX || level > log_level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (log_syslog) {
		syslog(prio[level], "[%s] %s", token, line);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char stamp[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %-5s [%s] %s\n", stamp, ts.tv_nsec / 1000000L,
		level_names[level], token, line);
}

void
log_msg(enum hdd_log_level level, const char *token, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, token, fmt, ap);
	va_end(ap);
}

void
log_errno(enum hdd_log_level level, const char *token, const char *fmt, ...)
{
	int saved = errno;
	char msg[1536];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(level, token, "%s: %s", msg, strerror(saved));
	errno = saved;
}
