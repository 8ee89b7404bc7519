/* SPDX-License-Identifier: MIT */
/* mig: layouts, as given and as compared with what NVML reports. Used on
 * both sides (the reactor validates and reports, the worker applies). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig.h"

/* "MIG 1g.10gb" and "1G.10GB" are "1g.10gb"; anything else than
 * [0-9a-z.+] is refused. */
static int
profile_name(const char *in, char *out, size_t size)
{
	size_t n = 0;

	if (in == NULL)
		return -EINVAL;
	if (strncasecmp(in, "MIG ", 4) == 0)
		in += 4;
	for (; *in && n + 1 < size; in++) {
		char c = (char)tolower((unsigned char)*in);

		if (!isdigit((unsigned char)c) && !(c >= 'a' && c <= 'z') && c != '.' && c != '+')
			return -EINVAL;
		out[n++] = c;
	}
	out[n] = '\0';
	return n > 0 && *in == '\0' ? 0 : -EINVAL;
}

static int
cmp_entry(const void *a, const void *b)
{
	const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
	int c = strcmp(json_string_value(json_object_get(x, "profile")),
		       json_string_value(json_object_get(y, "profile")));
	json_int_t px, py;

	if (c)
		return c;
	px = json_is_integer(json_object_get(x, "placement"))
		     ? json_integer_value(json_object_get(x, "placement")) : -1;
	py = json_is_integer(json_object_get(y, "placement"))
		     ? json_integer_value(json_object_get(y, "placement")) : -1;
	return px < py ? -1 : px > py;
}

int
mig_layout_normalize(const json_t *layout, json_t **out, char *why, size_t whylen)
{
	json_t *v, *entries[MIG_MAX_INSTANCES], *arr;
	const char *key;
	size_t n = 0, i;
	char name[64];

	*out = NULL;
	if (layout == NULL || json_is_null(layout)) {
		*out = json_array();
		return 0;
	}
	if (json_is_object(layout)) {
		json_object_foreach((json_t *)layout, key, v) {
			json_int_t count = json_integer_value(v);

			if (profile_name(key, name, sizeof(name)) < 0) {
				snprintf(why, whylen, "layout: \"%s\" is not a MIG profile name "
					 "such as 1g.10gb", key);
				goto fail;
			}
			if (!json_is_integer(v) || count < 0 || count > MIG_MAX_INSTANCES) {
				snprintf(why, whylen, "layout.%s: expected a count from 0 to %d", key,
					 MIG_MAX_INSTANCES);
				goto fail;
			}
			for (json_int_t k = 0; k < count; k++) {
				if (n == MIG_MAX_INSTANCES) {
					snprintf(why, whylen, "layout: more than %d GPU instances",
						 MIG_MAX_INSTANCES);
					goto fail;
				}
				entries[n++] = json_pack("{s:s}", "profile", name);
			}
		}
	} else if (json_is_array(layout)) {
		json_array_foreach(layout, i, v) {
			const json_t *pl = json_is_object(v) ? json_object_get(v, "placement") : NULL;
			const char *p = json_is_string(v) ? json_string_value(v)
				      : json_string_value(json_object_get(v, "profile"));

			if (n == MIG_MAX_INSTANCES) {
				snprintf(why, whylen, "layout: more than %d GPU instances",
					 MIG_MAX_INSTANCES);
				goto fail;
			}
			if (profile_name(p, name, sizeof(name)) < 0 ||
			    (json_is_object(v) && json_object_size(v) != 1 + (pl != NULL))) {
				snprintf(why, whylen, "layout[%zu]: expected a profile name or "
					 "{\"profile\": NAME, \"placement\": START}", i);
				goto fail;
			}
			if (pl && (!json_is_integer(pl) || json_integer_value(pl) < 0 ||
				   json_integer_value(pl) > 7)) {
				snprintf(why, whylen, "layout[%zu].placement: expected a memory slice "
					 "from 0 to 7", i);
				goto fail;
			}
			entries[n++] = pl ? json_pack("{s:s, s:O}", "profile", name, "placement", pl)
					  : json_pack("{s:s}", "profile", name);
		}
	} else {
		snprintf(why, whylen, "layout: expected {\"PROFILE\": COUNT} or a list of "
			 "{\"profile\", \"placement\"}");
		return -EINVAL;
	}
	qsort(entries, n, sizeof(entries[0]), cmp_entry);
	arr = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(arr, entries[i]);
	*out = arr;
	return 0;
fail:
	for (i = 0; i < n; i++)
		json_decref(entries[i]);
	return -EINVAL;
}

bool
mig_layout_matches(const json_t *gpu, const json_t *desired, char *why, size_t whylen)
{
	const json_t *layout = json_object_get(desired, "layout");
	const json_t *gis = json_object_get(gpu, "gpu_instances");
	bool enabled = json_is_true(json_object_get(desired, "enabled"));
	bool current = json_is_true(json_object_get(json_object_get(gpu, "mode"), "current"));
	bool used[32] = { false };
	size_t i, j;
	json_t *e, *gi;

	if (!json_is_true(json_object_get(gpu, "mig_capable"))) {
		snprintf(why, whylen, "the GPU is not MIG-capable");
		return false;
	}
	if (current != enabled) {
		snprintf(why, whylen, "MIG mode is %s", current ? "enabled" : "disabled");
		return false;
	}
	if (!enabled)
		return true;
	if (json_array_size(gis) != json_array_size(layout) || json_array_size(gis) > 32) {
		snprintf(why, whylen, "%zu GPU instances, %zu wanted", json_array_size(gis),
			 json_array_size(layout));
		return false;
	}
	json_array_foreach(gis, j, gi) {
		const json_t *cis = json_object_get(gi, "compute_instances");

		if (json_array_size(cis) != 1 ||
		    json_integer_value(json_object_get(json_array_get(cis, 0), "slices")) !=
			    json_integer_value(json_object_get(gi, "slices"))) {
			snprintf(why, whylen, "GPU instance %d does not have one compute instance "
				 "spanning it", (int)json_integer_value(json_object_get(gi, "id")));
			return false;
		}
	}
	/* Entries with a placement first (the layout is sorted by name). */
	for (int pass = 0; pass < 2; pass++) {
		json_array_foreach(layout, i, e) {
			const json_t *pl = json_object_get(e, "placement");
			const char *name = json_string_value(json_object_get(e, "profile"));
			bool found = false;

			if ((pass == 0) != json_is_integer(pl))
				continue;
			json_array_foreach(gis, j, gi) {
				if (used[j] || !name ||
				    strcmp(name, json_string_value(json_object_get(gi, "profile")) ?: "") != 0)
					continue;
				if (pl && json_integer_value(pl) !=
					      json_integer_value(json_object_get(
						      json_object_get(gi, "placement"), "start")))
					continue;
				used[j] = found = true;
				break;
			}
			if (!found) {
				if (pl)
					snprintf(why, whylen, "no %s GPU instance at placement %d",
						 name ? name : "?", (int)json_integer_value(pl));
				else
					snprintf(why, whylen, "too few %s GPU instances",
						 name ? name : "?");
				return false;
			}
		}
	}
	return true;
}
