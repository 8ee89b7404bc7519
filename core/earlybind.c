/* SPDX-License-Identifier: MIT */
/* The early-bind directory kept in step with the recorded claims. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "claim.h"
#include "earlybind.h"

static const char early_driver[] = "vfio-pci\n";

static bool
wanted(const struct claims *c, const char *name)
{
	for (size_t i = 0; c && i < c->n; i++) {
		const struct claim *cl = c->v[i];

		if (cl->state != CLAIM_CLAIMING && cl->state != CLAIM_CLAIMED)
			continue;
		for (size_t k = 0; k < cl->n; k++)
			if (!cl->members[k].bridge && strcmp(cl->members[k].address, name) == 0)
				return true;
	}
	return false;
}

static int
write_entry(int dirfd, const char *name)
{
	char buf[sizeof(early_driver)];
	ssize_t n;
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf));
		close(fd);
		if (n == (ssize_t)strlen(early_driver) && memcmp(buf, early_driver, (size_t)n) == 0)
			return 0;
		if (unlinkat(dirfd, name, 0) < 0)
			return -errno;
	}
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	n = write(fd, early_driver, strlen(early_driver));
	if (n != (ssize_t)strlen(early_driver)) {
		int err = n < 0 ? -errno : -EIO;

		close(fd);
		unlinkat(dirfd, name, 0);
		return err;
	}
	if (fsync(fd) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return close(fd) < 0 ? -errno : 0;
}

/* FNV-1a over the functions that should have an entry, and the directory. */
static uint64_t
signature(int state_dirfd, const struct claims *c)
{
	uint64_t h = 0xcbf29ce484222325ull;
	struct stat st;

	if (fstat(state_dirfd, &st) == 0)
		h = (h ^ (uint64_t)st.st_ino) * 0x100000001b3ull;
	for (size_t i = 0; c && i < c->n; i++) {
		const struct claim *cl = c->v[i];

		if (cl->state != CLAIM_CLAIMING && cl->state != CLAIM_CLAIMED)
			continue;
		for (size_t k = 0; k < cl->n; k++)
			for (const char *p = cl->members[k].address; !cl->members[k].bridge && *p; p++)
				h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
		h = (h ^ '/') * 0x100000001b3ull;
	}
	return h;
}

int
early_bind_sync(int state_dirfd, const struct claims *c)
{
	static uint64_t last;
	static bool last_ok;
	uint64_t sig = signature(state_dirfd, c);
	int dirfd, err, first = 0;
	DIR *dir;
	struct dirent *de;

	/* Saves that change nothing here (allocation counters) cost nothing. */
	if (last_ok && sig == last)
		return 0;

	if (mkdirat(state_dirfd, EARLY_BIND_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	dirfd = openat(state_dirfd, EARLY_BIND_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	/* Stale entries first: a released device must not be held at boot. */
	dir = fdopendir(dup(dirfd));
	if (dir == NULL) {
		err = -errno;
		close(dirfd);
		return err;
	}
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (!wanted(c, de->d_name) && unlinkat(dirfd, de->d_name, 0) < 0 && first == 0)
			first = -errno;
	}
	closedir(dir);
	for (size_t i = 0; c && i < c->n; i++) {
		const struct claim *cl = c->v[i];

		if (cl->state != CLAIM_CLAIMING && cl->state != CLAIM_CLAIMED)
			continue;
		for (size_t k = 0; k < cl->n; k++) {
			if (cl->members[k].bridge)
				continue;
			err = write_entry(dirfd, cl->members[k].address);
			if (err < 0 && first == 0)
				first = err;
		}
	}
	if (fsync(dirfd) < 0 && first == 0)
		first = -errno;
	close(dirfd);
	last = sig;
	last_ok = first == 0;
	return first;
}
