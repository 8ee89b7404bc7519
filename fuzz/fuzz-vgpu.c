/* SPDX-License-Identifier: MIT */
/* Fuzz target: the vgpu module's parsers of outside input. The input is
 * read as creatable_vgpu_types, as current_vgpu_type, and, cut at its first
 * three NUL bytes, as an mdev type directory's name, device_api,
 * available_instances and description; every type name found is turned
 * into a resource name, which must then pass the kubelet's check. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_name(const char *type_name)
{
	char res[VGPU_RESOURCE_MAX];

	if (vgpu_resource_name("nvidia.com", type_name, res, sizeof(res)) == 0 &&
	    !vgpu_resource_name_valid(res)) {
		fprintf(stderr, "resource name \"%s\" from \"%s\" is not valid\n", res, type_name);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vgpu_vf_type t[16];
	struct vgpu_mdev_type m;
	char *text = malloc(size + 1), *f[4];
	size_t n, k = 0;
	long id;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	n = vgpu_parse_creatable(text, size, t, 16);
	for (size_t i = 0; i < n && i < 16; i++) {
		if (t[i].id <= 0 || t[i].name[0] == '\0' || strlen(t[i].name) >= VGPU_NAME_MAX)
			abort();
		check_name(t[i].name);
	}
	if (vgpu_parse_type_id(text, &id) == 0 && id < 0)
		abort();
	f[0] = text;
	for (size_t i = 0; i < size && k < 3; i++)
		if (text[i] == '\0')
			f[++k] = text + i + 1;
	for (size_t i = k + 1; i < 4; i++)
		f[i] = NULL;
	if (vgpu_parse_mdev_type(f[0], f[1], f[2], f[3], &m) == 0) {
		if (m.available < -1)
			abort();
		check_name(m.name);
	}
	(void)vgpu_uuid_valid(text);
	free(text);
	return 0;
}
