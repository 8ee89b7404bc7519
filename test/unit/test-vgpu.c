/* SPDX-License-Identifier: MIT */
/* Unit tests of the vgpu module's parsers: creatable_vgpu_types (the real
 * capture's shape and the name-first shape), current_vgpu_type, mdev type
 * files, UUIDs and the resource names derived from type names. */
#include <errno.h>
#include <string.h>

#include "tap.h"
#include "vgpu-parse.h"

/* The L40S capture in harvester/pcidevices' testdata (abridged). */
static const char l40s[] =
	"ID    : vGPU Name\n"
	"1145  : NVIDIA L40S-1B\n"
	"1146  : NVIDIA L40S-2B\n"
	"1155  : NVIDIA L40S-1Q\n"
	"1166  : NVIDIA L40S-48A\n"
	"2164  : NVIDIA L40S-3B\n";

int
main(void)
{
	struct vgpu_vf_type t[8];
	struct vgpu_mdev_type m;
	char buf[160];
	long id = -1;
	size_t n;

	n = vgpu_parse_creatable(l40s, strlen(l40s), t, 8);
	is_int(n, 5, "the capture lists five types, the header none");
	is_int(t[0].id, 1145, "first id");
	is_str(t[0].name, "NVIDIA L40S-1B", "names keep their spaces");
	is_int(t[4].id, 2164, "last id");
	is_str(t[3].name, "NVIDIA L40S-48A", "name");

	n = vgpu_parse_creatable(l40s, strlen(l40s), t, 2);
	is_int(n, 5, "the count goes past max");
	is_int(t[1].id, 1146, "max entries written");

	{
		static const char guess[] = "NVIDIA L40S-12Q   1177\nNVIDIA L40S-24Q\t1178\n";

		n = vgpu_parse_creatable(guess, strlen(guess), t, 8);
		is_int(n, 2, "the name-first shape is taken too");
		is_int(t[0].id, 1177, "id is the last field");
		is_str(t[0].name, "NVIDIA L40S-12Q", "name before it");
		is_int(t[1].id, 1178, "tab separated");
	}
	{
		static const char crlf[] = "ID : vGPU Name\r\n 42 :  GRID A100-1-5C \r\n";

		n = vgpu_parse_creatable(crlf, strlen(crlf), t, 8);
		is_int(n, 1, "CRLF and blanks");
		is_str(t[0].name, "GRID A100-1-5C", "trimmed");
	}
	is_int(vgpu_parse_creatable("ID    : vGPU Name\n", 18, t, 8), 0,
	       "a VF with a type lists the header only");
	is_int(vgpu_parse_creatable("", 0, t, 8), 0, "empty");
	is_int(vgpu_parse_creatable("0 : none\n-3 : x\n12345678901 : y\nabc : d\n: e\n7 :\n", 46,
				    t, 8), 0, "ids 0, negative, too long, not digits; no name");
	{
		static const char nul[] = "12 : A\0B\n13 : C\n";

		n = vgpu_parse_creatable(nul, sizeof(nul) - 1, t, 8);
		is_int(n, 2, "a NUL inside a line is not the end");
		is_str(t[0].name, "A B", "control characters become spaces");
	}

	is_int(vgpu_parse_type_id("0\n", &id), 0, "current_vgpu_type 0");
	is_int(id, 0, "none");
	is_int(vgpu_parse_type_id("1147\n", &id), 0, "current_vgpu_type 1147");
	is_int(id, 1147, "value");
	is_int(vgpu_parse_type_id("x\n", &id), -EINVAL, "junk");
	is_int(vgpu_parse_type_id("", &id), -EINVAL, "empty");

	is_int(vgpu_parse_mdev_type("NVIDIA A2-2Q\n", "vfio-pci\n", "1\n",
				    "num_heads=4, frl_config=60\n", &m), 0, "an mdev type");
	is_str(m.name, "NVIDIA A2-2Q", "name");
	is_str(m.device_api, "vfio-pci", "device_api");
	is_int(m.available, 1, "available_instances");
	is_int(vgpu_parse_mdev_type(NULL, NULL, NULL, NULL, &m), 0, "no files");
	is_int(m.available, -1, "available unknown");
	is_str(m.name, "", "no name");
	is_int(vgpu_parse_mdev_type("x", NULL, "-1\n", NULL, &m), -EINVAL, "a bad count");

	ok(vgpu_uuid_valid("aa8d831f-7752-4d32-9f62-d4a95b118e28"), "a UUID");
	ok(!vgpu_uuid_valid("AA8D831F-7752-4D32-9F62-D4A95B118E28"), "upper case is refused");
	ok(!vgpu_uuid_valid("aa8d831f-7752-4d32-9f62-d4a95b118e2"), "short");
	ok(!vgpu_uuid_valid("aa8d831f77524d329f62d4a95b118e28xxxx"), "no dashes");

	is_int(vgpu_resource_name("nvidia.com", "NVIDIA A2-2Q", buf, sizeof(buf)), 0, "A2-2Q");
	is_str(buf, "nvidia.com/NVIDIA_A2-2Q", "Harvester's name");
	is_int(vgpu_resource_name("nvidia.com", "GRID A100-1-5C", buf, sizeof(buf)), 0, "A100");
	is_str(buf, "nvidia.com/GRID_A100-1-5C", "Harvester's name");
	ok(vgpu_resource_name_valid(buf), "valid for the kubelet");
	is_int(vgpu_resource_name("hostdevd.io", " (Single port serial) ", buf, sizeof(buf)), 0,
	       "mtty");
	is_str(buf, "hostdevd.io/Single_port_serial", "edges dropped, spaces become _");
	is_int(vgpu_resource_name("x.io", "---", buf, sizeof(buf)), -EINVAL, "nothing left");
	is_int(vgpu_resource_name("x.io", "A", buf, 5), -ENAMETOOLONG, "too long for the buffer");
	ok(!vgpu_resource_name_valid("nvidia.com/"), "empty name");
	ok(!vgpu_resource_name_valid("NVIDIA.com/x"), "upper-case domain");
	ok(!vgpu_resource_name_valid("a/b/c"), "two slashes");
	ok(!vgpu_resource_name_valid("a.io/_x"), "starts with _");
	is_str(vgpu_vendor_domain(0x10de), "nvidia.com", "NVIDIA");
	ok(vgpu_vendor_domain(0x1af4) == NULL, "no domain of its own");
	return tap_done();
}
