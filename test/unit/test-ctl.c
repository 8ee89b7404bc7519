/* SPDX-License-Identifier: MIT */
/* Unit tests: JSON-RPC framing, errors, filters and permissions. */
#include "config.h"

#include <errno.h>

#include "conf.h"
#include "ctl.h"
#include "fsroot.h"
#include "inventory.h"
#include "log.h"
#include "module.h"
#include "names.h"
#include "tap.h"
#include "tree.h"

static struct ctl *ctl;
static struct config *cfg;
static struct inventory *inv;
static int rescans;

static json_t *
req(struct ctl_peer *peer, const char *line)
{
	return ctl_handle_line(ctl, peer, line, strlen(line));
}

/* What daemon.c gives daemon.status and daemon.rescan, played here. */
static void
facts(void *arg, struct ctl_facts *f)
{
	*f = (struct ctl_facts){ .node_name = "node1", .sysfs_root = tree_root, .dev_root = "/dev",
				 .kubelet_dir = "/k", .control_socket = "/c", .state_dir = "/s",
				 .config_file = "/f", .module_dir = "/m", .uevents = 42 };
}

static int
rescan(void *arg, json_t **summary)
{
	rescans++;
	inventory_resync(inv, "test");
	*summary = json_pack("{s:I}", "devices", (json_int_t)inventory_count(inv));
	return 0;
}

static int
err_code(json_t *resp)
{
	return (int)json_integer_value(json_object_get(json_object_get(resp, "error"), "code"));
}

int
main(void)
{
	struct ctl_peer root = { .uid = 0 }, user = { .uid = 1000, .gid = 1000 };
	struct fsroot *sys;
	struct names *names;
	struct module_set *mods;
	json_t *r, *res;

	log_init(HDD_LOG_ERR, 0);
	tree_init();
	tree_pci("0000:00:02.0", 0x10de, 0x20f1, 0x030200, "vfio-pci", 12, 0);
	tree_pci("0000:00:03.0", 0x8086, 0x1521, 0x020000, "igb", 13, 0);
	tree_pci("0000:00:03.1", 0x8086, 0x1521, 0x020000, NULL, 13, 0);

	cfg = config_defaults();
	if (cfg == NULL || fsroot_new(tree_root, &sys) < 0 || names_new(NULL, NULL, &names) < 0 ||
	    inventory_new(sys, names, NULL, NULL, &inv) < 0)
		return 99;
	mods = calloc(1, sizeof(*mods));
	inventory_resync(inv, "test");
	{
		const struct ctl_env env = { .inv = inv, .mods = mods, .sys = sys, .facts = facts,
					     .rescan = rescan };

		if (mods == NULL || ctl_new(&env, cfg, &ctl) < 0)
			return 99;
	}

	r = req(&root, "{not json");
	is_int(err_code(r), CTL_PARSE_ERROR, "malformed JSON is -32700");
	ok(json_is_null(json_object_get(r, "id")), "with a null id");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"nope\"}");
	is_int(err_code(r), CTL_METHOD_NOT_FOUND, "unknown method is -32601");
	is_int(json_integer_value(json_object_get(r, "id")), 7, "the id is echoed");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"daemon.status\"}");
	is_int(err_code(r), CTL_INVALID_REQUEST, "wrong jsonrpc version is -32600");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}");
	is_int(err_code(r), CTL_INVALID_REQUEST, "a non-string method is -32600");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"daemon.status\"}");
	is_int(err_code(r), CTL_INVALID_REQUEST, "an object id is -32600");
	json_decref(r);
	r = req(&root, "[1]");
	ok(json_is_array(r) && err_code(json_array_get(r, 0)) == CTL_INVALID_REQUEST,
	   "a batch answers each element");
	json_decref(r);
	r = req(&root, "[]");
	is_int(err_code(r), CTL_INVALID_REQUEST, "an empty batch is -32600");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.get\",\"params\":{\"address\":5}}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "a wrong parameter type is -32602");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"colour\":\"red\"}}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "an unknown parameter is -32602");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":[1]}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "positional parameters are -32602");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.status\"}");
	ok(r == NULL, "a notification gets no answer");
	json_decref(r);
	r = req(&root, "   ");
	ok(r == NULL, "a blank line gets no answer");

	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"devices.list\"}");
	res = json_object_get(r, "result");
	is_int(json_array_size(res), 3, "devices.list lists every device");
	is_str(json_string_value(json_object_get(json_array_get(res, 0), "address")), "0000:00:02.0",
	       "in address order");
	is_str(json_string_value(json_object_get(json_array_get(res, 0), "class_id")), "0302",
	       "class_id is class+subclass");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"vendor\":\"0x8086\"}}");
	is_int(json_array_size(json_object_get(r, "result")), 2, "vendor filter");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"driver\":\"none\"}}");
	is_int(json_array_size(json_object_get(r, "result")), 1, "driver none filter");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"iommu_group\":13}}");
	is_int(json_array_size(json_object_get(r, "result")), 2, "iommu_group filter (integer)");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"class\":\"usb\"}}");
	is_int(json_array_size(json_object_get(r, "result")), 0, "class filter");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.get\",\"params\":{\"address\":\"0000:00:03.0\"}}");
	res = json_object_get(json_object_get(r, "result"), "iommu_group_members");
	ok(json_array_size(res) == 1 &&
	   strcmp(json_string_value(json_array_get(res, 0)), "0000:00:03.1") == 0,
	   "devices.get lists the other members of the group");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.get\",\"params\":{\"address\":\"0000:00:09.0\"}}");
	is_int(err_code(r), CTL_ERR_NOT_FOUND, "an unknown device is -32004");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.get\",\"params\":{\"address\":\"../x\"}}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "a malformed address is -32602");
	json_decref(r);

	r = req(&user, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.rescan\"}");
	is_int(err_code(r), CTL_ERR_PERMISSION, "rescan from an unprivileged peer is refused");
	json_decref(r);
	r = req(&user, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\"}");
	ok(json_is_array(json_object_get(r, "result")), "reading is allowed to anyone");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.rescan\"}");
	is_int(json_integer_value(json_object_get(json_object_get(r, "result"), "devices")), 3,
	       "rescan as root");
	is_int(rescans, 1, "through the daemon's rescan, once");
	json_decref(r);

	r = req(&user, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\",\"params\":{\"types\":[\"device.add\"]}}");
	ok(user.subscribed, "subscribed");
	ok(ctl_peer_wants(&user, "device.add") && !ctl_peer_wants(&user, "device.remove"),
	   "type filter by prefix");
	json_decref(r);
	r = req(&user, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\",\"params\":{\"types\":[\"device\"]}}");
	ok(ctl_peer_wants(&user, "device.remove") && !ctl_peer_wants(&user, "devicex"),
	   "a family prefix matches its members only");
	json_decref(r);
	r = req(&user, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\",\"params\":{\"types\":\"x\"}}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "types must be an array");
	json_decref(r);
	json_decref(user.event_types);

	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}");
	res = json_object_get(r, "result");
	is_int(json_integer_value(json_object_get(json_object_get(res, "devices"), "pci")), 3,
	       "status counts PCI devices");
	is_str(json_string_value(json_object_get(res, "node_name")), "node1",
	       "with the daemon's facts");
	is_int(json_integer_value(json_object_get(json_object_get(res, "stats"), "uevents")), 42,
	       "and its counters");
	json_decref(r);

	/* Pages: limit and cursor, next_cursor until the end. */
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"limit\":2}}");
	res = json_object_get(r, "result");
	is_int(json_array_size(json_object_get(res, "devices")), 2, "a page of limit devices");
	is_str(json_string_value(json_object_get(res, "next_cursor")), "pci/0000:00:03.1",
	       "next_cursor names the next device");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"limit\":2,\"cursor\":\"pci/0000:00:03.1\"}}");
	res = json_object_get(r, "result");
	ok(json_array_size(json_object_get(res, "devices")) == 1 &&
	   json_is_null(json_object_get(res, "next_cursor")), "the last page has a null next_cursor");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"vendor\":\"8086\",\"limit\":1,\"cursor\":\"pci/0000:00:02.5\"}}");
	res = json_object_get(r, "result");
	is_str(json_string_value(json_object_get(json_array_get(json_object_get(res, "devices"), 0), "address")),
	       "0000:00:03.0", "a cursor of a device gone since starts at the next one, filtered");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"cursor\":\"disk/x\"}}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "a cursor that devices.list did not give is -32602");
	json_decref(r);
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\",\"params\":{\"limit\":513}}");
	is_int(err_code(r), CTL_INVALID_PARAMS, "a limit over CTL_LIST_MAX is -32602");
	json_decref(r);

	/* A batch's answers share one budget; what passes it is not run. */
	cfg->control_max_answer = 1500;
	{
		char line[8192];
		size_t n = 0;

		n += (size_t)snprintf(line + n, sizeof(line) - n, "[");
		for (int i = 0; i < 10; i++)
			n += (size_t)snprintf(line + n, sizeof(line) - n,
					      "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"devices.get\","
					      "\"params\":{\"address\":\"0000:00:02.0\"}}", i ? "," : "", i);
		snprintf(line + n, sizeof(line) - n, "]");
		r = req(&root, line);
		ok(json_array_size(r) == 10, "every request of the batch is answered");
		ok(json_object_get(json_array_get(r, 0), "result") != NULL, "the first fits");
		is_int(err_code(json_array_get(r, 9)), CTL_ERR_TOO_LARGE, "the last is -32006");
		is_int(json_integer_value(json_object_get(json_array_get(r, 9), "id")), 9, "with its id");
		ok(json_dumpb(r, NULL, 0, JSON_COMPACT) < 1500 + 10 * 250, "only errors pass the budget");
		json_decref(r);
	}
	r = req(&root, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\"}");
	is_int(err_code(r), CTL_ERR_TOO_LARGE, "a single answer over the budget is -32006");
	json_decref(r);
	cfg->control_max_answer = 4 * 1024 * 1024;

	/* Supplementary groups, from /proc/PID/status. */
	{
		gid_t *g;
		size_t ng;
		struct ctl_peer member = { .uid = 1000, .gid = 1000 };

		is_int(ctl_parse_status_groups("Name:\tx\nUid:\t1\nGroups:\t4 24 27 \nNgid:\t0\n", &g, &ng),
		       0, "Groups: parsed");
		ok(ng == 3 && g[0] == 4 && g[2] == 27, "three groups");
		free(g);
		is_int(ctl_parse_status_groups("Groups:\n", &g, &ng), 0, "no groups");
		ok(ng == 0 && g == NULL, "an empty list");
		is_int(ctl_parse_status_groups("Name:\tx\n", &g, &ng), -ENOENT, "no Groups: line");
		is_int(ctl_parse_status_groups("Groups:\t4 x\n", &g, &ng), -EINVAL, "garbage is refused");
		is_int(ctl_parse_status_groups("Groups:\t99999999999999\n", &g, &ng), -EINVAL,
		       "an out-of-range gid is refused");
		free(cfg->control_group);
		cfg->control_group = strdup("hostdevd");
		cfg->control_gid = 27;
		ok(!ctl_peer_privileged(ctl, &member), "not in the group: not privileged");
		ctl_parse_status_groups("Groups:\t4 27\n", &member.groups, &member.ngroups);
		ok(ctl_peer_privileged(ctl, &member), "the group as a supplementary group is enough");
		ctl_peer_clear(&member);
		ok(member.groups == NULL && member.ngroups == 0, "ctl_peer_clear frees the groups");
	}

	ctl_free(ctl);
	inventory_free(inv);
	free(mods);
	names_free(names);
	fsroot_free(sys);
	config_free(cfg);
	tree_rm("");
	return tap_done();
}
