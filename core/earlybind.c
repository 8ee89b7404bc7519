/* SPDX-License-Identifier: MIT */
/* The early-bind directory kept in step with the recorded claims. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "earlybind.h"

static const char early_driver[] = "vfio-pci\n";

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

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The functions that should have an entry, sorted, without duplicates. */
static int
wanted_list(const char (*want)[16], size_t n, struct early_bind *out)
{
	out->v = n ? calloc(n, sizeof(*out->v)) : NULL;
	if (n && out->v == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		snprintf(out->v[i], sizeof(out->v[0]), "%s", want[i]);
	if (n > 1)
		qsort(out->v, n, sizeof(out->v[0]), name_cmp);
	out->n = 0;
	for (size_t i = 0; i < n; i++)
		if (out->n == 0 || strcmp(out->v[out->n - 1], out->v[i]) != 0)
			memmove(out->v[out->n++], out->v[i], sizeof(out->v[0]));
	return 0;
}

static bool
in_list(const struct early_bind *l, const char *name)
{
	return l->n && bsearch(name, l->v, l->n, sizeof(l->v[0]),
			       name_cmp) != NULL;
}

/* Entries nobody wants any more go first (a released device must not be
 * held at boot; also one planted by hand or left from a release while the
 * daemon was down): one pass over the directory, no file opened. */
static int
remove_stale(int dirfd, const struct early_bind *want, bool *changed)
{
	struct dirent *de;
	int first = 0;
	DIR *dir = fdopendir(dup(dirfd));

	if (dir == NULL)
		return -errno;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.' || in_list(want, de->d_name))
			continue;
		*changed = true;
		if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT && first == 0)
			first = -errno;
	}
	closedir(dir);
	return first;
}

/* Then the wanted ones: all of them checked at the first sync of a run,
 * later only those the last sync did not leave, so claiming n devices opens
 * O(n) files in all, not O(n) per claim. */
static int
write_wanted(int dirfd, const struct early_bind *have, const struct early_bind *want,
	     bool *changed)
{
	int err, first = 0;

	for (size_t i = 0; i < want->n; i++) {
		if (have && in_list(have, want->v[i]))
			continue;
		*changed = true;
		if ((err = write_entry(dirfd, want->v[i])) < 0 && first == 0)
			first = err;
	}
	return first;
}

void
early_bind_free(struct early_bind *eb)
{
	if (eb == NULL)
		return;
	free(eb->v);
	free(eb);
}

int
early_bind_sync(int state_dirfd, const char (*want_v)[16], size_t want_n,
		struct early_bind **known)
{
	struct early_bind want = { 0 };
	bool changed = *known == NULL;
	int dirfd, first, err;

	if (wanted_list(want_v, want_n, &want) < 0)
		return -ENOMEM;
	if (*known && want.n == (*known)->n &&
	    (want.n == 0 || memcmp(want.v, (*known)->v, want.n * sizeof(want.v[0])) == 0)) {
		free(want.v);		/* nothing changed here (allocation counters) */
		return 0;
	}
	if (mkdirat(state_dirfd, EARLY_BIND_DIR, 0700) < 0 && errno != EEXIST) {
		first = -errno;
		goto out;
	}
	dirfd = openat(state_dirfd, EARLY_BIND_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0) {
		first = -errno;
		goto out;
	}
	first = remove_stale(dirfd, &want, &changed);
	err = write_wanted(dirfd, *known, &want, &changed);
	if (first == 0)
		first = err;
	if (changed && fsync(dirfd) < 0 && first == 0)
		first = -errno;
	close(dirfd);
out:
	early_bind_free(*known);
	*known = NULL;
	if (first == 0) {
		/* Remembered only when it all went through: after an error
		 * the next sync checks every wanted entry again. */
		*known = malloc(sizeof(**known));
		if (*known) {
			**known = want;
			return 0;
		}
	}
	free(want.v);
	return first;
}
