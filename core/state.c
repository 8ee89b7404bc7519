/* SPDX-License-Identifier: MIT */
/* state.json: claims that survive restart, kill -9 and reboot. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsroot.h"
#include "state.h"

#define STATE_TMP "state.json.tmp"
#define STATE_MAX (16 * 1024 * 1024)

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), eight bytes at a
 * time through tables ("slicing-by-8"): the same values as the bitwise loop
 * it replaced, so the files written before still verify. */
static uint32_t crc_table[8][256];

static void
crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xffu];
}

/* Continues a CRC over more bytes; start with 0. */
static uint32_t
crc32_update(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	if (crc_table[0][1] == 0)
		crc_table_init();
	crc = ~crc;
	for (; len >= 8; p += 8, len -= 8) {
		uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				    (uint32_t)p[3] << 24);
		uint32_t b = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
			     (uint32_t)p[7] << 24;

		crc = crc_table[7][a & 0xffu] ^ crc_table[6][(a >> 8) & 0xffu] ^
		      crc_table[5][(a >> 16) & 0xffu] ^ crc_table[4][a >> 24] ^
		      crc_table[3][b & 0xffu] ^ crc_table[2][(b >> 8) & 0xffu] ^
		      crc_table[1][(b >> 16) & 0xffu] ^ crc_table[0][b >> 24];
	}
	for (; len > 0; p++, len--)
		crc = crc_table[0][(crc ^ *p) & 0xffu] ^ (crc >> 8);
	return ~crc;
}

uint32_t
state_crc32(const void *data, size_t len)
{
	return crc32_update(0, data, len);
}

/* A growing text buffer. */
struct sbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void
sbuf_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->err)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (p == NULL) {
			b->err = -ENOMEM;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sbuf_str(struct sbuf *b, const char *s)
{
	sbuf_add(b, s, strlen(s));
}

/* One top-level member, dumped once: its key and its value, or an array's
 * elements one by one (the file puts each on a line of its own). */
struct member {
	const char *key;
	char *ktext;
	char *vtext;		/* NULL for an array */
	char **items;
	size_t nitems;
	bool borrowed;		/* items belong to the caller */
};

static int
key_cmp(const void *a, const void *b)
{
	return strcmp(((const struct member *)a)->key, ((const struct member *)b)->key);
}

#define DUMP_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY)

char *
state_dump(const json_t *v)
{
	return v ? json_dumps(v, DUMP_FLAGS) : NULL;
}

static void
members_free(struct member *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		free(m[i].ktext);
		free(m[i].vtext);
		for (size_t k = 0; !m[i].borrowed && k < m[i].nitems; k++)
			free(m[i].items[k]);
		free(m[i].items);
	}
	free(m);
}

/* The members of `state` other than "checksum", sorted by key as jansson's
 * JSON_SORT_KEYS sorts them, each serialised once. */
static int
members_dump(const json_t *state, struct member **ret, size_t *ret_n)
{
	size_t n = 0, max = json_object_size(state);
	struct member *m = calloc(max ? max : 1, sizeof(*m));
	const char *key;
	json_t *v;

	if (m == NULL)
		return -ENOMEM;
	json_object_foreach((json_t *)state, key, v) {
		json_t *k;
		struct member *x;

		if (strcmp(key, "checksum") == 0)
			continue;
		x = &m[n++];
		x->key = key;
		k = json_string(key);
		x->ktext = k ? json_dumps(k, DUMP_FLAGS) : NULL;
		json_decref(k);
		if (x->ktext == NULL)
			goto oom;
		if (json_is_array(v)) {
			size_t i;
			json_t *e;

			x->items = calloc(json_array_size(v) + 1, sizeof(*x->items));
			if (x->items == NULL)
				goto oom;
			json_array_foreach(v, i, e) {
				x->items[i] = json_dumps(e, DUMP_FLAGS);
				if (x->items[i] == NULL)
					goto oom;
				x->nitems = i + 1;
			}
		} else {
			x->vtext = json_dumps(v, DUMP_FLAGS);
			if (x->vtext == NULL)
				goto oom;
		}
	}
	qsort(m, n, sizeof(*m), key_cmp);
	*ret = m;
	*ret_n = n;
	return 0;
oom:
	members_free(m, n);
	return -ENOMEM;
}

/* Writes the members as JSON: compact (the canonical form the checksum
 * covers, byte for byte what json_dumps(JSON_COMPACT | JSON_SORT_KEYS) gives)
 * or, for the file, with `checksum` in its sorted place and a line per
 * array element. */
static void
members_text(struct sbuf *b, const struct member *m, size_t n, const char *checksum)
{
	bool first = true, sum_done = checksum == NULL;

	sbuf_str(b, "{");
	for (size_t i = 0; i <= n; i++) {
		if (!sum_done && (i == n || strcmp(m[i].key, "checksum") > 0)) {
			sbuf_str(b, first ? "" : ",");
			sbuf_str(b, "\"checksum\":\"");
			sbuf_str(b, checksum);
			sbuf_str(b, "\"");
			sum_done = true;
			first = false;
		}
		if (i == n)
			break;
		sbuf_str(b, first ? "" : ",");
		first = false;
		sbuf_str(b, m[i].ktext);
		sbuf_str(b, ":");
		if (m[i].vtext) {
			sbuf_str(b, m[i].vtext);
			continue;
		}
		sbuf_str(b, "[");
		for (size_t k = 0; k < m[i].nitems; k++) {
			if (k)
				sbuf_str(b, ",");
			if (checksum)
				sbuf_str(b, "\n");
			sbuf_str(b, m[i].items[k]);
		}
		sbuf_str(b, checksum && m[i].nitems ? "\n]" : "]");
	}
	sbuf_str(b, checksum ? "}\n" : "}");
}

/* The checksum covers the canonical form: sorted keys, compact, without
 * the checksum member. */
static int
checksum_of(const json_t *state, char *buf, size_t size)
{
	struct sbuf b = { 0 };
	struct member *m;
	size_t n;
	int err = members_dump(state, &m, &n);

	if (err < 0)
		return err;
	members_text(&b, m, n, NULL);
	members_free(m, n);
	if (b.err) {
		free(b.p);
		return b.err;
	}
	snprintf(buf, size, "crc32:%08x", state_crc32(b.p, b.len));
	free(b.p);
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

	/* O_NONBLOCK: a FIFO planted at the name must not hang the start; the
	 * type is checked on the descriptor, before any read. */
	fd = openat(dirfd, STATE_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		snprintf(why, whylen, "cannot open %s: %s", STATE_FILE,
			 errno == ELOOP ? "it is a symbolic link" : strerror(errno));
		return errno == ELOOP || errno == ENXIO ? -EBADMSG : -errno;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(why, whylen, "cannot stat %s: %s", STATE_FILE, strerror(errno));
		close(fd);
		return -EBADMSG;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "%s is not a regular file (%s)", STATE_FILE,
			 S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a directory" :
			 S_ISSOCK(st.st_mode) ? "a socket" : S_ISCHR(st.st_mode) ? "a character device" :
			 S_ISBLK(st.st_mode) ? "a block device" : "not a file");
		close(fd);
		return -EBADMSG;
	}
	if (st.st_size > STATE_MAX) {
		snprintf(why, whylen, "%s is larger than %d MiB", STATE_FILE, STATE_MAX >> 20);
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

/* Checksums and writes sorted members atomically: temporary file, fsync,
 * rename, fsync of the directory. */
static int
members_write(int dirfd, const struct member *m, size_t n)
{
	struct sbuf canon = { 0 }, file = { 0 };
	size_t off = 0;
	struct stat st;
	char sum[32];
	int fd, err;

	members_text(&canon, m, n, NULL);
	err = canon.err;
	if (err == 0) {
		snprintf(sum, sizeof(sum), "crc32:%08x", state_crc32(canon.p, canon.len));
		members_text(&file, m, n, sum);
		err = file.err;
	}
	free(canon.p);
	if (err < 0) {
		free(file.p);
		return err;
	}
	/* The temporary file is the previous state.json, swapped out by the
	 * last save: rewritten in place, no inode made or freed per save (on
	 * ext4 without a journal, making one scans the recently freed ones). */
	fd = openat(dirfd, STATE_TMP, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
			ftruncate(fd, 0) < 0)) {
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		unlinkat(dirfd, STATE_TMP, 0);
		fd = openat(dirfd, STATE_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0600);
	}
	if (fd < 0) {
		free(file.p);
		return -errno;
	}
	while (off < file.len) {
		ssize_t w = write(fd, file.p + off, file.len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			err = w < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)w;
	}
	free(file.p);
	if (err == 0 && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && err == 0)
		err = -errno;
	/* Atomically: the new file becomes state.json, the old one the next
	 * temporary file. A plain rename where exchanging is not supported or
	 * there is no state.json yet. */
	if (err == 0 && renameat2(dirfd, STATE_TMP, dirfd, STATE_FILE, RENAME_EXCHANGE) < 0 &&
	    renameat(dirfd, STATE_TMP, dirfd, STATE_FILE) < 0)
		err = -errno;
	if (err == 0 && fsync(dirfd) < 0)
		err = -errno;
	if (err < 0)
		unlinkat(dirfd, STATE_TMP, 0);
	return err;
}

int
state_save(int dirfd, const json_t *state)
{
	json_t *top = json_object();
	struct member *m = NULL;
	size_t n = 0;
	int err;

	/* A shallow copy with the version: each member is serialised once, for
	 * the checksum and the file alike. */
	if (top == NULL || json_object_update(top, (json_t *)state) < 0 ||
	    json_object_set_new(top, "version", json_integer(STATE_VERSION)) < 0) {
		json_decref(top);
		return -ENOMEM;
	}
	err = members_dump(top, &m, &n);
	if (err == 0)
		err = members_write(dirfd, m, n);
	members_free(m, n);
	json_decref(top);
	return err;
}

int
state_save_claims(int dirfd, const char *boot_id, char *const *claims, size_t n)
{
	return state_save_all(dirfd, boot_id, claims, n, NULL);
}

int
state_save_all(int dirfd, const char *boot_id, char *const *claims, size_t n,
	       const char *modules)
{
	size_t nm = modules ? 4 : 3, vi = nm - 1;
	struct member *m = calloc(nm, sizeof(*m));
	json_t *id = json_string(boot_id ? boot_id : "");
	int err = -ENOMEM;

	/* The members in their sorted order: boot_id, claims, [modules,] version. */
	if (m == NULL || id == NULL)
		goto out;
	m[0].key = "boot_id";
	m[1].key = "claims";
	m[vi].key = "version";
	m[1].borrowed = true;
	m[0].ktext = strdup("\"boot_id\"");
	m[1].ktext = strdup("\"claims\"");
	m[vi].ktext = strdup("\"version\"");
	m[0].vtext = state_dump(id);
	if (asprintf(&m[vi].vtext, "%d", STATE_VERSION) < 0)
		m[vi].vtext = NULL;
	m[1].items = calloc(n + 1, sizeof(*m[1].items));
	if (!m[0].ktext || !m[1].ktext || !m[vi].ktext || !m[0].vtext || !m[vi].vtext ||
	    !m[1].items)
		goto out;
	if (modules) {
		m[2].key = "modules";
		m[2].ktext = strdup("\"modules\"");
		m[2].vtext = strdup(modules);
		if (!m[2].ktext || !m[2].vtext)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (claims[i] == NULL) {
			err = -EINVAL;
			goto out;
		}
		m[1].items[i] = claims[i];
		m[1].nitems = i + 1;
	}
	err = members_write(dirfd, m, nm);
out:
	json_decref(id);
	members_free(m, m ? nm : 0);
	return err;
}

void
state_boot_id(char *buf, size_t size)
{
	char path[4096];
	FILE *f = proc_path(path, sizeof(path), "sys/kernel/random/boot_id") ? NULL : fopen(path, "re");

	buf[0] = '\0';
	if (f == NULL)
		return;
	if (fgets(buf, (int)size, f) == NULL)
		buf[0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}
