/* SPDX-License-Identifier: MIT */
/* Unit tests: the configuration parser names the offending key. */
#include "config.h"

#include <errno.h>

#include "conf.h"
#include "log.h"
#include "tap.h"

static int
parse(const char *text, struct config **c, char *err, size_t len)
{
	err[0] = '\0';
	return config_parse(text, strlen(text), "test.conf", c, err, len);
}

int
main(void)
{
	struct config *c = NULL;
	char err[512];

	log_init(HDD_LOG_ERR, 0);
	is_int(parse("{}", &c, err, sizeof(err)), 0, "an empty object is the defaults");
	if (c) {
		is_int(c->resync_interval, 60, "default resync interval");
		is_int(c->control_max_clients, 256, "default max clients");
		ok(!config_module_disabled(c, "pci"), "no module disabled by default");
		config_free(c);
	}
	is_int(parse("{\"resync_interval\": 5, \"log_level\": \"debug\", \"debounce_ms\": 10,"
		     " \"control\": {\"max_clients\": 4, \"group\": \"root\"},"
		     " \"modules\": {\"disable\": [\"usb\"]}}", &c, err, sizeof(err)), 0,
	       "a full configuration");
	if (c) {
		is_int(c->resync_interval, 5, "resync interval");
		is_int(c->log_level, HDD_LOG_DEBUG, "log level");
		is_int(c->control_max_clients, 4, "max clients");
		is_str(c->control_group, "root", "control group");
		is_int(c->control_gid, 0, "control group id");
		ok(config_module_disabled(c, "usb"), "usb disabled");
		config_free(c);
	}

	is_int(parse("{\"resync_interval\": \"often\"}", &c, err, sizeof(err)), -EINVAL, "wrong type");
	ok(strstr(err, "resync_interval") != NULL, "the error names the key: %s", err);
	is_int(parse("{\"resync_intervall\": 5}", &c, err, sizeof(err)), -EINVAL, "a typo");
	ok(strstr(err, "resync_intervall: unknown key") != NULL, "the error names the unknown key: %s", err);
	is_int(parse("{\"control\": {\"max_clients\": 0}}", &c, err, sizeof(err)), -EINVAL, "out of range");
	ok(strstr(err, "control.max_clients") != NULL, "nested key path in the error: %s", err);
	is_int(parse("{\"control\": {\"group\": \"no-such-group-hostdevd\"}}", &c, err, sizeof(err)),
	       -EINVAL, "unknown group");
	ok(strstr(err, "control.group") != NULL, "the error names control.group: %s", err);
	is_int(parse("{\"modules\": {\"disable\": [1]}}", &c, err, sizeof(err)), -EINVAL, "non-string module");
	ok(strstr(err, "modules.disable[0]") != NULL, "the error names the element: %s", err);
	is_int(parse("{\"log_level\": \"loud\"}", &c, err, sizeof(err)), -EINVAL, "bad log level");
	is_int(parse("{\"a\": 1, \"a\": 2}", &c, err, sizeof(err)), -EINVAL, "duplicate keys");
	is_int(parse("{\n\"resync_interval\": 5,\n}", &c, err, sizeof(err)), -EINVAL, "malformed JSON");
	ok(strstr(err, "line 3") != NULL, "malformed JSON error has the line: %s", err);
	is_int(parse("[1,2]", &c, err, sizeof(err)), -EINVAL, "not an object");

	/* Module sections: kept for the module loader, which judges them. */
	is_int(parse("{\"sriov\": {\"vfs\": 4}, \"resync_interval\": 5}", &c, err, sizeof(err)), 0,
	       "an object under a module-like key is kept");
	if (c) {
		is_int(json_integer_value(json_object_get(config_section(c, "sriov"), "vfs")), 4,
		       "as that module's section");
		ok(config_section(c, "vgpu") == NULL, "no section: NULL");
		config_free(c);
	}
	is_int(parse("{\"Sriov\": {}}", &c, err, sizeof(err)), -EINVAL,
	       "a key that cannot name a module is unknown");
	is_int(parse("{\"sriov\": 3}", &c, err, sizeof(err)), -EINVAL, "a section must be an object");
	ok(strstr(err, "sriov: unknown key") != NULL, "said as an unknown key: %s", err);

	is_int(config_load("/nonexistent/hostdevd.conf", &c, err, sizeof(err)), 0,
	       "a missing file gives the defaults");
	if (c) {
		is_int(c->resync_interval, 60, "defaults from a missing file");
		config_free(c);
	}
	is_int(config_load("/", &c, err, sizeof(err)) < 0, 1, "a directory is an error");
	c = NULL;
	is_int(config_reload("/nonexistent/hostdevd.conf", &c, err, sizeof(err)), -ENOENT,
	       "a reload of a missing file is an error, not the defaults");
	ok(c == NULL && strstr(err, "/nonexistent/hostdevd.conf") != NULL, "it names the file: %s", err);
	return tap_done();
}
