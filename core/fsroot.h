/* SPDX-License-Identifier: MIT */
/* A directory tree all kernel paths are relative to (--sysfs-root, --dev-root). */
#ifndef HOSTDEVD_FSROOT_H
#define HOSTDEVD_FSROOT_H

#include <stddef.h>

struct fsroot;

/* Opens `path` as a root. Returns 0 or -errno. */
int fsroot_new(const char *path, struct fsroot **ret);
void fsroot_free(struct fsroot *r);
const char *fsroot_path(const struct fsroot *r);
int fsroot_fd(const struct fsroot *r);

/* Opens the directory `rel` (no leading '/'), never resolving outside the
 * root: symlinks are followed only while they stay beneath it. Returns an fd
 * or -errno (-EXDEV for an escape). */
int fsroot_open_dir(const struct fsroot *r, const char *rel);

/* Like fsroot_open_dir for any path, with open(2) flags (O_CLOEXEC added). */
int fsroot_open(const struct fsroot *r, const char *rel, int flags);

/* 0 when `rel` exists under the root (symlinks not followed), -errno otherwise. */
int fsroot_exists(const struct fsroot *r, const char *rel);

/* Reads the symlink `name` in directory `dir_rel` (dirfd is that directory
 * or -1) and writes its target, normalised relative to the root, to `out`.
 * Returns 0, -EINVAL when it is not a link, -EXDEV when the target leaves the
 * root or is absolute, -ENAMETOOLONG, or another -errno. */
int fsroot_readlink(const struct fsroot *r, const char *dir_rel, int dirfd,
		    const char *name, char *out, size_t size);

/* Joins `base` (a directory relative to the root) and a relative link
 * `target`, resolving "." and ".." lexically. Returns 0, -EXDEV when the
 * result would climb above the root or target is absolute, -ENAMETOOLONG. */
int path_join_normalize(const char *base, const char *target, char *out, size_t size);

/* The last component of a path ("" for an empty string). */
const char *path_basename(const char *path);

/* --- /proc (--proc-root) ------------------------------------------------------
 * Every read of kernel state under /proc goes through proc_path(). By default
 * it is /proc itself. With --proc-root DIR (the host's /proc mounted into a
 * container), paths are taken under DIR, and the per-namespace views
 * ("self/..." and "net/...") become PID 1's: the host's mount table and
 * routes, not the container's. The setting is also put in the environment
 * ($HOSTDEVD_PROC_ROOT), so the worker process inherits it. */
void proc_root_set(const char *dir);
/* Writes the path of `rel` (no leading '/': "self/mountinfo", "swaps",
 * "net/route", "1234/fd") to out. Returns 0 or -ENAMETOOLONG. */
int proc_path(char *out, size_t size, const char *rel);

#endif
