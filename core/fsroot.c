/* SPDX-License-Identifier: MIT */
/* A directory tree all kernel paths are relative to (--sysfs-root, --dev-root). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fsroot.h"

struct fsroot {
	char *path;
	int fd;
	int no_openat2;		/* kernel without openat2: lexical checks instead */
};

int
fsroot_new(const char *path, struct fsroot **ret)
{
	struct fsroot *r;

	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->path = strdup(path);
	if (r->path == NULL) {
		free(r);
		return -ENOMEM;
	}
	r->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->fd < 0) {
		int err = -errno;
		free(r->path);
		free(r);
		return err;
	}
	*ret = r;
	return 0;
}

void
fsroot_free(struct fsroot *r)
{
	if (r == NULL)
		return;
	if (r->fd >= 0)
		close(r->fd);
	free(r->path);
	free(r);
}

const char *
fsroot_path(const struct fsroot *r)
{
	return r->path;
}

int
fsroot_fd(const struct fsroot *r)
{
	return r->fd;
}

const char *
path_basename(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

int
path_join_normalize(const char *base, const char *target, char *out, size_t size)
{
	char buf[4096];
	size_t len = 0;
	const char *p;
	int n;

	if (target[0] == '/')
		return -EXDEV;
	n = snprintf(buf, sizeof(buf), "%s%s%s", base, base[0] ? "/" : "", target);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -ENAMETOOLONG;

	/* Walk the components, keeping a stack of them in `out`. */
	if (size == 0)
		return -ENAMETOOLONG;
	out[0] = '\0';
	p = buf;
	while (*p) {
		const char *end = strchr(p, '/');
		size_t clen = end ? (size_t)(end - p) : strlen(p);

		if (clen == 0 || (clen == 1 && p[0] == '.')) {
			/* skip */
		} else if (clen == 2 && p[0] == '.' && p[1] == '.') {
			char *slash;

			if (len == 0)
				return -EXDEV;
			slash = strrchr(out, '/');
			len = slash ? (size_t)(slash - out) : 0;
			out[len] = '\0';
		} else {
			if (len + (len ? 1 : 0) + clen + 1 > size)
				return -ENAMETOOLONG;
			if (len)
				out[len++] = '/';
			memcpy(out + len, p, clen);
			len += clen;
			out[len] = '\0';
		}
		p += clen;
		if (*p == '/')
			p++;
	}
	return 0;
}

int
fsroot_open(const struct fsroot *r, const char *rel, int flags)
{
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	char norm[4096];
	int fd, err;

	if (rel[0] == '\0')
		rel = ".";
	if (!r->no_openat2) {
		/* EAGAIN: a rename or mount anywhere on the system raced the
		 * RESOLVE_BENEATH walk (openat2(2)); the kernel asks for a retry. */
		for (int tries = 0; tries < 64; tries++) {
			fd = (int)syscall(SYS_openat2, r->fd, rel, &how, sizeof(how));
			if (fd >= 0 || errno != EAGAIN)
				break;
		}
		if (fd >= 0)
			return fd;
		if (errno != ENOSYS)
			return -errno;
		((struct fsroot *)r)->no_openat2 = 1;
	}
	/* Old kernel: refuse lexical escapes; kernel-made sysfs links stay inside. */
	err = path_join_normalize("", rel, norm, sizeof(norm));
	if (err < 0)
		return err;
	fd = openat(r->fd, norm[0] ? norm : ".", flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int
fsroot_open_dir(const struct fsroot *r, const char *rel)
{
	return fsroot_open(r, rel, O_RDONLY | O_DIRECTORY);
}

int
fsroot_exists(const struct fsroot *r, const char *rel)
{
	struct stat st;

	if (fstatat(r->fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

int
fsroot_readlink(const struct fsroot *r, const char *dir_rel, int dirfd,
		const char *name, char *out, size_t size)
{
	char target[4096];
	ssize_t n;

	if (dirfd >= 0) {
		n = readlinkat(dirfd, name, target, sizeof(target));
	} else {
		char rel[4096];
		int m = snprintf(rel, sizeof(rel), "%s%s%s", dir_rel, dir_rel[0] ? "/" : "", name);

		if (m < 0 || (size_t)m >= sizeof(rel))
			return -ENAMETOOLONG;
		n = readlinkat(r->fd, rel, target, sizeof(target));
	}
	if (n < 0)
		return -errno;
	if ((size_t)n >= sizeof(target))
		return -ENAMETOOLONG;
	target[n] = '\0';
	return path_join_normalize(dir_rel, target, out, size);
}

/* --- /proc ------------------------------------------------------------------- */

#define PROC_ROOT_ENV "HOSTDEVD_PROC_ROOT"

static const char *
proc_root(void)
{
	const char *r = getenv(PROC_ROOT_ENV);

	return r && r[0] ? r : NULL;
}

void
proc_root_set(const char *dir)
{
	if (dir && dir[0] && strcmp(dir, "/proc") != 0)
		setenv(PROC_ROOT_ENV, dir, 1);
	else
		unsetenv(PROC_ROOT_ENV);
}

int
proc_path(char *out, size_t size, const char *rel)
{
	const char *root = proc_root();
	int n;

	if (rel[0] == '\0')
		n = snprintf(out, size, "%s", root ? root : "/proc");
	else if (root == NULL)
		n = snprintf(out, size, "/proc/%s", rel);
	else if (strncmp(rel, "self/", 5) == 0)
		n = snprintf(out, size, "%s/1/%s", root, rel + 5);
	else if (strncmp(rel, "net/", 4) == 0)
		n = snprintf(out, size, "%s/1/%s", root, rel);
	else
		n = snprintf(out, size, "%s/%s", root, rel);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
