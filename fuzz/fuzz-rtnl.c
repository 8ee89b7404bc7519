/* SPDX-License-Identifier: MIT */
/* Fuzz target: rtnl. The sriov module's parser of the kernel's rtnetlink
 * answers (modules/sriov/rtnl.c): the input is one received datagram
 * (RTM_NEWLINK with VF lists, RTM_NEWROUTE, NLMSG_ERROR with extended ACK,
 * NLMSG_DONE), read a second time as generic netlink answers (the
 * controller's family id, devlink's eswitch mode). Checks: every parsed VF
 * set again through the request builder parses back to the same values,
 * the stacking walk of the links it saw ends, and a parsed devlink device
 * asked about again parses back to the same names. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>

#include "rtnl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	struct rtnl_ifrel rel[32];
	size_t nrel;
	int defaults[8];
	size_t ndefaults;
};

static void
check_roundtrip(const struct rtnl_link *l)
{
	static struct rtnl_link back;
	char req[RTNL_REQ_SIZE];

	for (size_t i = 0; i < l->nvfs && i < 4; i++) {
		const struct rtnl_vf *vf = &l->vfs[i];
		struct rtnl_vf want = *vf;

		/* What a request can carry: reported values, VLANs in range. */
		if (want.vlan < 0)
			want.vlan = 0;
		if (want.qos < 0)
			want.qos = 0;
		if (want.min_tx_rate < 0)
			want.min_tx_rate = 0;
		if (want.max_tx_rate < 0)
			want.max_tx_rate = 0;
		for (int a = 0; a < RTNL_VF_ATTR_MAX; a++) {
			size_t len = rtnl_req_setvf(req, 7, 3, a, &want);

			if (len > RTNL_REQ_SIZE)
				abort();
			if (rtnl_parse_link(req, len, &back) < 0 || back.nvfs != 1 ||
			    back.vfs[0].index != want.index) {
				fprintf(stderr, "setvf request %s of VF %u does not parse back\n",
					rtnl_vf_attr_to_string(a), want.index);
				abort();
			}
			if (!rtnl_vf_attr_equal(a, &want, &back.vfs[0]) &&
			    !(a == RTNL_VF_VLAN && want.vlan_proto != 0x8100 && want.vlan_proto != 0x88a8)) {
				fprintf(stderr, "setvf %s of VF %u changed its value\n",
					rtnl_vf_attr_to_string(a), want.index);
				abort();
			}
		}
	}
}

static int
link_cb(void *arg, const struct rtnl_link *l)
{
	struct seen *s = arg;

	if (l->nvfs > RTNL_VF_MAX || memchr(l->name, '\0', sizeof(l->name)) == NULL ||
	    memchr(l->kind, '\0', sizeof(l->kind)) == NULL)
		abort();
	check_roundtrip(l);
	if (s->nrel < 32) {
		s->rel[s->nrel] = (struct rtnl_ifrel){ .ifindex = l->ifindex, .master = l->master,
						       .link = l->link };
		s->nrel++;
	}
	return 0;
}

static int
route_cb(void *arg, const struct rtnl_route *r)
{
	struct seen *s = arg;

	if (r->noifs > RTNL_ROUTE_OIF_MAX)
		abort();
	for (size_t i = 0; i < r->noifs && s->ndefaults < 8; i++)
		s->defaults[s->ndefaults++] = r->oifs[i];
	return 0;
}

static int
genl_cb(void *arg, const void *msg, size_t len)
{
	static struct rtnl_eswitch e, back;
	char req[RTNL_REQ_SIZE];
	uint16_t id;

	(void)arg;
	if (rtnl_parse_genl_family(msg, len, &id) == 0 && id < NLMSG_MIN_TYPE)
		abort();
	if (rtnl_parse_eswitch(msg, len, &e) < 0)
		return 0;
	if (memchr(e.bus, '\0', sizeof(e.bus)) == NULL || memchr(e.dev, '\0', sizeof(e.dev)) == NULL ||
	    e.mode < -1 || e.mode > 0xffff)
		abort();
	(void)rtnl_eswitch_mode_to_string(e.mode);
	len = rtnl_req_eswitch_get(req, 1, 0x1b, e.bus, e.dev);
	if (len > RTNL_REQ_SIZE || rtnl_parse_eswitch(req, len, &back) < 0 ||
	    strcmp(back.bus, e.bus) != 0 || strcmp(back.dev, e.dev) != 0 || back.mode != -1) {
		fprintf(stderr, "eswitch request of %s/%s does not parse back\n", e.bus, e.dev);
		abort();
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct seen s;
	struct rtnl_sink sink = { .link = link_cb, .route = route_cb, .arg = &s };
	struct rtnl_sink genl = { .msg = genl_cb };
	char ack[64];
	uint32_t seq = 0;
	uint8_t *copy;
	int ret;

	memset(&s, 0, sizeof(s));
	/* The kernel's datagrams are 4-byte aligned: a private aligned copy. */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (size >= sizeof(struct nlmsghdr))
		memcpy(&seq, copy + 8, sizeof(seq));
	ret = rtnl_walk(copy, size, seq, &sink, ack, sizeof(ack));
	if (ret > 1 || memchr(ack, '\0', sizeof(ack)) == NULL)
		abort();
	ret = rtnl_walk(copy, size, seq, &genl, ack, sizeof(ack));
	if (ret > 1 || memchr(ack, '\0', sizeof(ack)) == NULL)
		abort();
	for (size_t i = 0; i < s.nrel; i++)
		for (size_t k = 0; k < s.ndefaults; k++)
			(void)rtnl_link_below(s.rel, s.nrel, s.rel[i].ifindex, s.defaults[k]);
	free(copy);
	return 0;
}
