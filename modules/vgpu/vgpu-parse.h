/* SPDX-License-Identifier: MIT */
/* vgpu: pure parsers of the files NVIDIA's and the mdev core's sysfs show,
 * and the names derived from them (no I/O: unit-tested and fuzzed). */
#ifndef VGPU_PARSE_H
#define VGPU_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* The longest type name kept (NVIDIA's are about 20 characters). */
#define VGPU_NAME_MAX 96
/* The longest resource name (the kubelet's limit on the whole name). */
#define VGPU_RESOURCE_MAX 128

/* One line of a VF's nvidia/creatable_vgpu_types. */
struct vgpu_vf_type {
	long id;			/* > 0 */
	char name[VGPU_NAME_MAX];	/* "NVIDIA L40S-1B", spaces kept */
};

/* Parses creatable_vgpu_types: the header "ID    : vGPU Name", then one
 * "<id> : <name>" per line (split at the first ':'), and, tolerated, the
 * "<name> <id>" shape (id as the last whitespace field). Lines that are
 * neither are skipped. Writes up to max entries to out; returns how many
 * types the text held (may exceed max), never an error: an empty file or a
 * VF that already has a type lists none. */
size_t vgpu_parse_creatable(const char *text, size_t len, struct vgpu_vf_type *out, size_t max);

/* Parses a decimal type id such as current_vgpu_type ("0\n" = none).
 * Returns 0 with *id set, or -EINVAL. */
int vgpu_parse_type_id(const char *text, long *id);

/* One mdev type as its directory's files show it. */
struct vgpu_mdev_type {
	char name[VGPU_NAME_MAX];	/* from "name"; empty when absent */
	char device_api[32];		/* "vfio-pci" */
	long available;			/* available_instances, -1 unreadable */
	char description[256];
};

/* Parses the files of mdev_supported_types/<id>/ (each NULL when absent;
 * trailing newlines and control characters dropped, text cut to fit).
 * Returns 0, or -EINVAL when available_instances is there but not a count. */
int vgpu_parse_mdev_type(const char *name, const char *device_api, const char *available,
			 const char *description, struct vgpu_mdev_type *out);

/* Whether s is a lower-case 8-4-4-4-12 UUID as the mdev core takes it. */
bool vgpu_uuid_valid(const char *s);

/* The default resource name of a type: "<domain>/<name sanitized>" the way
 * Harvester derives it ("NVIDIA A2-2Q" -> "nvidia.com/NVIDIA_A2-2Q"): space
 * and anything but [A-Za-z0-9._-] become '_', leading and trailing '_', '.'
 * and '-' are dropped, at most 63 characters after the '/'. Returns 0,
 * -EINVAL when nothing of the name is left, -ENAMETOOLONG. */
int vgpu_resource_name(const char *domain, const char *type_name, char *buf, size_t size);

/* Whether name is a resource name the kubelet takes: "<domain>/<name>",
 * domain [a-z0-9.-], name [A-Za-z0-9._-] beginning and ending alphanumeric,
 * at most 63 characters. */
bool vgpu_resource_name_valid(const char *name);

/* The resource domain of a PCI vendor ("nvidia.com" for 0x10de), or NULL
 * when the vendor has none of its own (the caller's default applies). */
const char *vgpu_vendor_domain(int vendor_id);

#endif /* VGPU_PARSE_H */
