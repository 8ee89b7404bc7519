/* SPDX-License-Identifier: MIT */
/* state.json: claims that survive restart, kill -9 and reboot. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state.h"

#define STATE_TMP "state.json.tmp"
#define STATE_MAX (16 * 1024 * 1024)

uint32_t
state_crc32(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

/* The checksum covers the canonical form: sorted keys, compact. */
static int
checksum_of(const json_t *state, char *buf, size_t size)
{
	json_t *copy = json_deep_copy(state);
	char *text;

	if (copy == NULL)
		return -ENOMEM;
	json_object_del(copy, "checksum");
	text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(copy);
	if (text == NULL)
		return -ENOMEM;
	snprintf(buf, size, "crc32:%08x", state_crc32(text, strlen(text)));
	free(text);
	return 0;
}

int
state_load(int dirfd, json_t **ret, char *why, size_t whylen)
{
	json_error_t jerr;
	struct stat st;
	char sum[32];
	json_t *state;
	char *text;
	ssize_t n;
	int fd;

	fd = openat(dirfd, STATE_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		snprintf(why, whylen, "cannot open %s: %s", STATE_FILE, strerror(errno));
		return errno == ELOOP ? -EBADMSG : -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATE_MAX) {
		snprintf(why, whylen, "%s is not a regular file of sane size", STATE_FILE);
		close(fd);
		return -EBADMSG;
	}
	text = malloc((size_t)st.st_size + 1);
	if (text == NULL) {
		close(fd);
		return -ENOMEM;
	}
	n = read(fd, text, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		snprintf(why, whylen, "short read of %s", STATE_FILE);
		free(text);
		return -EBADMSG;
	}
	state = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (state == NULL || !json_is_object(state)) {
		snprintf(why, whylen, "%s is not valid JSON (%s)", STATE_FILE,
			 state ? "not an object" : jerr.text);
		json_decref(state);
		return -EBADMSG;
	}
	if (!json_is_string(json_object_get(state, "checksum")) || checksum_of(state, sum, sizeof(sum)) < 0 ||
	    strcmp(sum, json_string_value(json_object_get(state, "checksum"))) != 0) {
		snprintf(why, whylen, "%s fails its checksum (torn or edited)", STATE_FILE);
		json_decref(state);
		return -EBADMSG;
	}
	if (json_integer_value(json_object_get(state, "version")) != STATE_VERSION ||
	    !json_is_array(json_object_get(state, "claims"))) {
		snprintf(why, whylen, "%s has an unknown version or no claims list", STATE_FILE);
		json_decref(state);
		return -EBADMSG;
	}
	*ret = state;
	return 0;
}

int
state_save(int dirfd, const json_t *state)
{
	json_t *copy = json_deep_copy(state);
	char sum[32], *text;
	size_t len, off = 0;
	int fd, err = 0;

	if (copy == NULL)
		return -ENOMEM;
	json_object_set_new(copy, "version", json_integer(STATE_VERSION));
	if (checksum_of(copy, sum, sizeof(sum)) < 0) {
		json_decref(copy);
		return -ENOMEM;
	}
	json_object_set_new(copy, "checksum", json_string(sum));
	text = json_dumps(copy, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(copy);
	if (text == NULL)
		return -ENOMEM;
	len = strlen(text);
	unlinkat(dirfd, STATE_TMP, 0);
	fd = openat(dirfd, STATE_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(text);
		return -errno;
	}
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	free(text);
	if (err == 0 && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && err == 0)
		err = -errno;
	if (err == 0 && renameat(dirfd, STATE_TMP, dirfd, STATE_FILE) < 0)
		err = -errno;
	if (err == 0 && fsync(dirfd) < 0)
		err = -errno;
	if (err < 0)
		unlinkat(dirfd, STATE_TMP, 0);
	return err;
}

void
state_boot_id(char *buf, size_t size)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	buf[0] = '\0';
	if (f == NULL)
		return;
	if (fgets(buf, (int)size, f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}
