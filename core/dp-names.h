/* SPDX-License-Identifier: MIT */
/* Kubelet resource names, KubeVirt env var names and plugin socket names. */
#ifndef HOSTDEVD_DP_NAMES_H
#define HOSTDEVD_DP_NAMES_H

#include <stddef.h>
#include "hostdevd/module.h"

#define DP_NAME_MAX 63		/* the part after '/' */
#define DP_SUN_PATH_MAX 107	/* sun_path less its NUL */

/* Checks a kubelet extended resource name "<dns subdomain>/<name>": the
 * domain lower-case DNS-1123 (<= 253), not kubernetes.io, the name <= 63
 * characters matching ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]. Returns 0,
 * or -EINVAL with a reason in why. */
int dp_resource_name_check(const char *name, char *why, size_t whylen);

/* The default resource name of a PCI function from its pci.ids names, the
 * way Harvester derives it (vendor "[BRACKET/..]" or first word + ".com",
 * product upper-cased with '/', '.' and blanks as '_'), without its bugs:
 * no leading or trailing '_', '.' or '-', at most 63 characters
 * (VIRTUAL_FUNCTION becomes VF, then it is cut), the device id when no name
 * is left. Always valid. */
void dp_default_resource_name(const struct hdd_pci_facts *f, char *buf, size_t size);

/* PREFIX_ + resource upper-cased, '/' and '.' -> '_', nothing else changed. */
int dp_env_name(const char *prefix, const char *resource, char *buf, size_t size);

/* The endpoint file name for a resource in `dir`: "hostdevd-<resource with
 * '/' -> '-'>.sock". When dir + '/' + that exceeds 107 characters, the name
 * keeps as much of the resource as fits and ends in "-<8 hex digits of the
 * FNV-1a hash of the full resource name>.sock", so it stays unique and stable.
 * Returns 0, or -ENAMETOOLONG when even "hostdevd-<hash>.sock" cannot fit. */
int dp_socket_name(const char *dir, const char *resource, char *buf, size_t size);

#endif
