/* SPDX-License-Identifier: MIT */
/* Fuzz target: the configuration parser. */
#include "config.h"

#include <stdint.h>

#include "conf.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *c = NULL;
	char err[512];

	log_init(HDD_LOG_ERR, 0);
	if (config_parse((const char *)data, size, "fuzz", &c, err, sizeof(err)) == 0) {
		config_match_rule(c, "0000:3b:00.0", 0x10de, 0x20f1, 0x030200);
		config_free(c);
	}
	return 0;
}
