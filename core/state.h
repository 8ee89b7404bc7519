/* SPDX-License-Identifier: MIT */
/* state.json: claims and module sections that survive restart, kill -9 and reboot. */
#ifndef HOSTDEVD_STATE_H
#define HOSTDEVD_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define STATE_FILE "state.json"
#define STATE_VERSION 1

/* Loads <dir>/state.json. Returns 0 with *ret (the "claims" array and the
 * rest, checksum verified), -ENOENT when there is no file (a first start),
 * or -EBADMSG when it is torn, corrupt or fails its checksum (why says
 * what): the caller must fail closed. */
int state_load(int dirfd, json_t **ret, char *why, size_t whylen);

/* Writes `state` (an object; a "checksum" member is added) atomically:
 * temporary file, fsync, rename, fsync of the directory. Returns 0 or
 * -errno. */
int state_save(int dirfd, const json_t *state);

/* The same as state_save() of {"boot_id": boot_id, "claims": [...]}, with
 * each claim record already serialised by state_dump(): a caller that keeps
 * them serialises only what changed, so a save costs the claims that changed
 * plus a copy and a CRC of the rest. Returns 0 or -errno. */
int state_save_claims(int dirfd, const char *boot_id, char *const *claims, size_t n);

/* The same with a "modules" member (the per-module sections, an object
 * already serialised by state_dump(); NULL: none, as before ABI v2). */
int state_save_all(int dirfd, const char *boot_id, char *const *claims, size_t n,
		   const char *modules);

/* A value as state.json holds it (compact, sorted keys: the form the
 * checksum covers); a new string, or NULL. */
char *state_dump(const json_t *v);

/* CRC-32 (IEEE) of a buffer, for the checksum. */
uint32_t state_crc32(const void *data, size_t len);

/* The kernel's boot id, or "" when unreadable. */
void state_boot_id(char *buf, size_t size);

#endif
