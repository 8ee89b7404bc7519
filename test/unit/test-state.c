/* SPDX-License-Identifier: MIT */
/* Unit tests: state.json's checksum, its compatibility with files written
 * before, and files that are not regular files. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state.h"
#include "tap.h"

/* Written by the state.c before the table-driven CRC and the one-pass
 * writer (indented, "checksum" in the middle): it must still load. */
static const char old_file[] =
	"{\n"
	" \"boot_id\": \"0f3e-\xc3\xbcmlaut\",\n"
	" \"checksum\": \"crc32:213ec648\",\n"
	" \"claims\": [\n"
	"  {\n"
	"   \"address\": \"0000:01:10.2\",\n"
	"   \"advertised_as\": \"intel.com/X540_VF\",\n"
	"   \"allocations\": 3,\n"
	"   \"created\": 1764600000,\n"
	"   \"from_config\": false,\n"
	"   \"iommu_group\": 112,\n"
	"   \"members\": [\n"
	"    {\n"
	"     \"address\": \"0000:01:10.2\",\n"
	"     \"bridge\": false,\n"
	"     \"original_driver\": \"ixgbevf\"\n"
	"    }\n"
	"   ],\n"
	"   \"resource_name\": null,\n"
	"   \"state\": \"claimed\"\n"
	"  }\n"
	" ],\n"
	" \"version\": 1\n"
	"}";

/* The bitwise CRC the files were checksummed with. */
static uint32_t
crc_bitwise(const void *data, size_t len)
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

static void
put(int dirfd, const char *text)
{
	int fd;

	unlinkat(dirfd, STATE_FILE, 0);
	fd = openat(dirfd, STATE_FILE, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	close(fd);
}

static char *
slurp(int dirfd)
{
	static char buf[65536];
	int fd = openat(dirfd, STATE_FILE, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

int
main(void)
{
	char dir[] = "/tmp/test-state-XXXXXX", why[256], sum[32];
	unsigned char junk[4099];
	json_t *st = NULL, *copy, *claims;
	char *canon;
	int dirfd, err;

	if (mkdtemp(dir) == NULL)
		return 99;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	alarm(20);	/* a FIFO that hangs the load fails the test, not the run */

	is_int(state_crc32("123456789", 9), 0xcbf43926, "CRC-32 check value");
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)(i * 131 + 7);
	for (size_t len = 0; len < sizeof(junk); len += 511)
		is_int(state_crc32(junk, len), crc_bitwise(junk, len), "same CRC as the bitwise loop, %zu bytes", len);
	for (size_t off = 1; off < 8; off++)
		is_int(state_crc32(junk + off, 1000 + off), crc_bitwise(junk + off, 1000 + off),
		       "same CRC at offset %zu", off);

	put(dirfd, old_file);
	why[0] = '\0';
	err = state_load(dirfd, &st, why, sizeof(why));
	is_int(err, 0, "a file written by the previous version loads (%s)", why);
	ok(st && json_array_size(json_object_get(st, "claims")) == 1, "with its claim");

	/* Saved again: the checksum is the CRC of the canonical form, as
	 * json_dumps(JSON_COMPACT | JSON_SORT_KEYS) writes it. */
	if (st) {
		json_object_del(st, "checksum");
		claims = json_object_get(st, "claims");
		for (int i = 0; i < 40; i++)
			json_array_append(claims, json_array_get(claims, 0));
		json_object_set_new(st, "extra", json_pack("{s:[i,s,n], s:{}}", "z", 1, "q\"\\\n", "a"));
		is_int(state_save(dirfd, st), 0, "saved");
		copy = json_deep_copy(st);
		json_object_set_new(copy, "version", json_integer(STATE_VERSION));
		canon = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(sum, sizeof(sum), "crc32:%08x", crc_bitwise(canon, strlen(canon)));
		free(canon);
		json_decref(copy);
		json_decref(st);
		st = NULL;
		ok(strstr(slurp(dirfd), sum) != NULL, "the file carries %s", sum);
		is_int(state_load(dirfd, &st, why, sizeof(why)), 0, "and loads again (%s)", why);
		ok(st && json_array_size(json_object_get(st, "claims")) == 41, "41 claims back");
		{
			json_t *want = json_pack("{s:[i,s,n], s:{}}", "z", 1, "q\"\\\n", "a");

			ok(st && json_equal(json_object_get(st, "extra"), want), "other members kept");
			json_decref(want);
		}
		json_decref(st);
		st = NULL;
	}
	/* An edited file fails its checksum. */
	put(dirfd, old_file);
	{
		char *edited = strdup(old_file);

		memcpy(strstr(edited, "ixgbevf"), "ixgbevX", 7);
		put(dirfd, edited);
		free(edited);
	}
	is_int(state_load(dirfd, &st, why, sizeof(why)), -EBADMSG, "an edited file is refused");
	ok(strstr(why, "checksum") != NULL, "why: %s", why);

	/* Not a regular file: refused at once, never read (a FIFO would block). */
	unlinkat(dirfd, STATE_FILE, 0);
	if (mkfifoat(dirfd, STATE_FILE, 0600) < 0)
		return 99;
	why[0] = '\0';
	is_int(state_load(dirfd, &st, why, sizeof(why)), -EBADMSG, "a FIFO is refused without hanging");
	ok(strstr(why, "not a regular file (a FIFO)") != NULL, "why: %s", why);
	unlinkat(dirfd, STATE_FILE, 0);
	mkdirat(dirfd, STATE_FILE, 0700);
	is_int(state_load(dirfd, &st, why, sizeof(why)), -EBADMSG, "a directory is refused");
	ok(strstr(why, "not a regular file (a directory)") != NULL, "why: %s", why);
	unlinkat(dirfd, STATE_FILE, AT_REMOVEDIR);
	symlinkat("/etc/hostname", dirfd, STATE_FILE);
	is_int(state_load(dirfd, &st, why, sizeof(why)), -EBADMSG, "a symbolic link is refused");
	unlinkat(dirfd, STATE_FILE, 0);
	is_int(state_load(dirfd, &st, why, sizeof(why)), -ENOENT, "no file: a first start");

	close(dirfd);
	rmdir(dir);
	return tap_done();
}
