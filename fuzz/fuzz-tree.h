/* SPDX-License-Identifier: MIT */
/* Shared by the fuzz harnesses: a scratch directory rebuilt for each input
 * from a small text description, so that the fuzzer chooses what sysfs (or a
 * state directory) contains, and a minimal daemon over it.
 *
 * The description is one record per line:
 *   d PATH            a directory (parents are made as needed)
 *   f PATH CONTENT    a file; CONTENT takes \n, \t, \\ and \xHH escapes
 *   l PATH TARGET     a symbolic link (TARGET as written)
 *   r PATH            removes PATH (a file, a link or a whole directory)
 * PATH is relative, without "." or ".." components; every directory on the
 * way is opened with O_NOFOLLOW, so a record never writes outside the
 * scratch directory, whatever links earlier records made. Other lines are
 * handed back to the harness (fuzz_tree_apply's `other` callback). */
#ifndef HOSTDEVD_FUZZ_TREE_H
#define HOSTDEVD_FUZZ_TREE_H

/* Each harness uses part of these helpers. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_TREE_MAX_RECORDS 512
#define FUZZ_TREE_MAX_PATH 512
#define FUZZ_TREE_MAX_CONTENT 8192

static char fuzz_root[128];
static int fuzz_root_fd = -1;

static int
fuzz_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (ftw->level > 0)
		remove(path);
	return 0;
}

/* Empties the scratch directory (never follows a link). */
static void
fuzz_tree_clear(void)
{
	if (fuzz_root[0])
		nftw(fuzz_root, fuzz_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void
fuzz_tree_atexit(void)
{
	fuzz_tree_clear();
	if (fuzz_root[0])
		rmdir(fuzz_root);
}

/* Makes the scratch directory (in /dev/shm when there is one: the harness
 * rewrites it for every input). */
static void
fuzz_tree_init(void)
{
	static const char *const bases[] = { "/dev/shm", "/tmp" };

	for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		snprintf(fuzz_root, sizeof(fuzz_root), "%s/hostdevd-fuzz-XXXXXX", bases[i]);
		if (mkdtemp(fuzz_root) != NULL)
			break;
		fuzz_root[0] = '\0';
	}
	if (fuzz_root[0] == '\0')
		abort();
	fuzz_root_fd = open(fuzz_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fuzz_root_fd < 0)
		abort();
	atexit(fuzz_tree_atexit);
}

/* Opens the directory holding the last component of `rel`, making the ones
 * before it; *base points at that last component. Returns an fd or -1. */
static int
fuzz_parent(const char *rel, char *copy, size_t size, const char **base)
{
	int fd, next;
	char *p, *slash;

	if (rel[0] == '\0' || rel[0] == '/' || strlen(rel) >= size)
		return -1;
	snprintf(copy, size, "%s", rel);
	fd = dup(fuzz_root_fd);
	for (p = copy; fd >= 0 && (slash = strchr(p, '/')) != NULL; p = slash + 1) {
		*slash = '\0';
		if (p[0] == '\0' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
			close(fd);
			return -1;
		}
		mkdirat(fd, p, 0755);
		next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	if (fd >= 0 && (p[0] == '\0' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0)) {
		close(fd);
		return -1;
	}
	*base = p;
	return fd;
}

static void
fuzz_mkdir(const char *rel)
{
	char copy[FUZZ_TREE_MAX_PATH];
	const char *base;
	int fd = fuzz_parent(rel, copy, sizeof(copy), &base);

	if (fd < 0)
		return;
	mkdirat(fd, base, 0755);
	close(fd);
}

static void
fuzz_put_bytes(const char *rel, const void *data, size_t len)
{
	char copy[FUZZ_TREE_MAX_PATH];
	const char *base;
	int fd = fuzz_parent(rel, copy, sizeof(copy), &base), f;

	if (fd < 0)
		return;
	f = openat(fd, base, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	close(fd);
	if (f < 0)
		return;
	if (len && write(f, data, len) < 0)
		(void)0;
	close(f);
}

static void fuzz_put(const char *rel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fuzz_put(const char *rel, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fuzz_put_bytes(rel, text, strlen(text));
}

static void
fuzz_link(const char *rel, const char *target)
{
	char copy[FUZZ_TREE_MAX_PATH];
	const char *base;
	int fd = fuzz_parent(rel, copy, sizeof(copy), &base);

	if (fd < 0)
		return;
	unlinkat(fd, base, 0);
	if (symlinkat(target, fd, base) < 0)
		(void)0;
	close(fd);
}

static int
fuzz_rm_tree_at(int dirfd, const char *name, int depth)
{
	int fd;

	if (unlinkat(dirfd, name, 0) == 0 || errno != EISDIR || depth > 32)
		return 0;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		int fd2 = dup(fd);
		DIR *dir = fd2 >= 0 ? fdopendir(fd2) : NULL;
		struct dirent *de;

		if (dir == NULL && fd2 >= 0)
			close(fd2);
		while (dir && (de = readdir(dir)) != NULL)
			if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
				fuzz_rm_tree_at(fd, de->d_name, depth + 1);
		if (dir)
			closedir(dir);
		close(fd);
	}
	return unlinkat(dirfd, name, AT_REMOVEDIR);
}

static void
fuzz_rm(const char *rel)
{
	char copy[FUZZ_TREE_MAX_PATH];
	const char *base;
	int fd = fuzz_parent(rel, copy, sizeof(copy), &base);

	if (fd < 0)
		return;
	fuzz_rm_tree_at(fd, base, 0);
	close(fd);
}

static int
fuzz_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes the escapes of a file record in place; returns the length. */
static size_t
fuzz_unescape(char *s, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		if (s[i] != '\\' || i + 1 >= len) {
			s[o++] = s[i];
			continue;
		}
		i++;
		switch (s[i]) {
		case 'n': s[o++] = '\n'; break;
		case 't': s[o++] = '\t'; break;
		case 'x':
			if (i + 2 < len && fuzz_hex(s[i + 1]) >= 0 && fuzz_hex(s[i + 2]) >= 0) {
				s[o++] = (char)(fuzz_hex(s[i + 1]) * 16 + fuzz_hex(s[i + 2]));
				i += 2;
			} else {
				s[o++] = 'x';
			}
			break;
		default: s[o++] = s[i]; break;
		}
	}
	return o;
}

typedef void (*fuzz_line_fn)(void *arg, char *line, size_t len);

/* Applies a description (see the top of this file); `other` (may be NULL)
 * gets every line that is not a record, in order. */
static void
fuzz_tree_apply(const uint8_t *data, size_t size, fuzz_line_fn other, void *arg)
{
	char *text = malloc(size + 1), *line, *end;
	int records = 0;

	if (text == NULL)
		return;
	memcpy(text, data, size);
	text[size] = '\0';
	for (line = text; line < text + size; line = end + 1) {
		size_t len;
		char *path, *rest;

		end = memchr(line, '\n', (size_t)(text + size - line));
		if (end == NULL)
			end = text + size;
		*end = '\0';
		len = (size_t)(end - line);
		if (len < 3 || line[1] != ' ' || strchr("dflr", line[0]) == NULL ||
		    memchr(line, '\0', len) != NULL) {
			if (other)
				other(arg, line, len);
			continue;
		}
		if (++records > FUZZ_TREE_MAX_RECORDS)
			break;
		path = line + 2;
		rest = strchr(path, ' ');
		if (rest)
			*rest++ = '\0';
		switch (line[0]) {
		case 'd':
			fuzz_mkdir(path);
			break;
		case 'r':
			fuzz_rm(path);
			break;
		case 'l':
			if (rest && rest[0])
				fuzz_link(path, rest);
			break;
		case 'f': {
			size_t n = rest ? fuzz_unescape(rest, strlen(rest)) : 0;

			fuzz_put_bytes(path, rest ? rest : "", n > FUZZ_TREE_MAX_CONTENT ?
				       FUZZ_TREE_MAX_CONTENT : n);
			break;
		}
		}
	}
	free(text);
}

/* The directories every sysfs tree has, so that a scan always has buses. */
static void
fuzz_sysfs_skeleton(void)
{
	static const char *const dirs[] = {
		"devices/pci0000:00", "bus/pci/devices", "bus/pci/drivers", "bus/usb/devices",
		"bus/usb/drivers", "bus/mdev/devices", "kernel/iommu_groups", "class/mdev_bus",
		"class/net", "class/graphics", "dev/block", "module",
	};

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		fuzz_mkdir(dirs[i]);
}

#endif
