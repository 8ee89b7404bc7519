/* SPDX-License-Identifier: MIT */
/* Logging: levelled lines on stderr (or syslog), errno-appending variants. */
#ifndef HOSTDEVD_LOG_H
#define HOSTDEVD_LOG_H

#include <stdarg.h>
#include "hostdevd/module.h"

void log_init(enum hdd_log_level level, int use_syslog);
void log_set_level(enum hdd_log_level level);
enum hdd_log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(enum hdd_log_level level);

void log_msg(enum hdd_log_level level, const char *token, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vmsg(enum hdd_log_level level, const char *token, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* log_warn and log_err append ": strerror(errno)"; the x variants don't. */
#define log_err(tok, ...)   log_errno(HDD_LOG_ERR, tok, __VA_ARGS__)
#define log_warn(tok, ...)  log_errno(HDD_LOG_WARN, tok, __VA_ARGS__)
#define log_errx(tok, ...)  log_msg(HDD_LOG_ERR, tok, __VA_ARGS__)
#define log_warnx(tok, ...) log_msg(HDD_LOG_WARN, tok, __VA_ARGS__)
#define log_info(tok, ...)  log_msg(HDD_LOG_INFO, tok, __VA_ARGS__)
#define log_debug(tok, ...) log_msg(HDD_LOG_DEBUG, tok, __VA_ARGS__)

void log_errno(enum hdd_log_level level, const char *token, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
