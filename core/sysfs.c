/* SPDX-License-Identifier: MIT */
/* Reading sysfs attribute files: strict parsers that tell garbage from absence. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sysfs.h"

int
sysfs_read_attr(int dirfd, const char *name, char *buf, size_t size)
{
	ssize_t n;
	int fd;

	if (size < 2)
		return -EINVAL;
	/* On any error buf is "": callers that ignore the error (optional
	 * attributes) must not find an unterminated read there. */
	buf[0] = '\0';
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errno == ELOOP ? -EINVAL : -errno;
	do {
		n = read(fd, buf, size);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = -errno;

		close(fd);
		buf[0] = '\0';
		return err;
	}
	close(fd);
	if ((size_t)n >= size) {
		buf[0] = '\0';
		return -EFBIG;
	}
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	return (int)n;
}

int
sysfs_parse_hex(const char *s, unsigned long max, unsigned long *ret)
{
	unsigned long v;
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2;
	if (!isxdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 16);
	if (errno != 0)
		return -EINVAL;
	while (isspace((unsigned char)*end))
		end++;
	if (*end != '\0' || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int
sysfs_parse_int(const char *s, long min, long max, long *ret)
{
	long v;
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (!(isdigit((unsigned char)*s) || ((*s == '-' || *s == '+') && isdigit((unsigned char)s[1]))))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0)
		return -EINVAL;
	while (isspace((unsigned char)*end))
		end++;
	if (*end != '\0' || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int
sysfs_read_hex(int dirfd, const char *name, unsigned long max, unsigned long *ret)
{
	char buf[64];
	int n = sysfs_read_attr(dirfd, name, buf, sizeof(buf));

	if (n < 0)
		return n == -EFBIG ? -EINVAL : n;
	return sysfs_parse_hex(buf, max, ret);
}

int
sysfs_read_int(int dirfd, const char *name, long min, long max, long *ret)
{
	char buf[64];
	int n = sysfs_read_attr(dirfd, name, buf, sizeof(buf));

	if (n < 0)
		return n == -EFBIG ? -EINVAL : n;
	return sysfs_parse_int(buf, min, max, ret);
}

static int
hex_run(const char *s, int min, int max)
{
	int n = 0;

	while (isxdigit((unsigned char)s[n]) && !isupper((unsigned char)s[n]))
		n++;
	return (n >= min && n <= max) ? n : -1;
}

int
pci_address_valid(const char *s)
{
	int n = hex_run(s, 4, 8);

	if (n < 0 || s[n] != ':')
		return 0;
	s += n + 1;
	if (hex_run(s, 2, 2) < 0 || s[2] != ':')
		return 0;
	s += 3;
	if (hex_run(s, 2, 2) < 0 || s[2] != '.')
		return 0;
	s += 3;
	return s[0] >= '0' && s[0] <= '7' && s[1] == '\0';
}

int
usb_port_valid(const char *s)
{
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return 0;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p != '-')
		return 0;
	p++;
	for (;;) {
		if (!isdigit((unsigned char)*p))
			return 0;
		while (isdigit((unsigned char)*p))
			p++;
		if (*p == '\0')
			return (size_t)(p - s) < 32;
		if (*p != '.')
			return 0;
		p++;
	}
}
