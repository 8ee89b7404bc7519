/* SPDX-License-Identifier: MIT */
/* Unit tests of the sriov module's rtnetlink requests and reply parser. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <libmnl/libmnl.h>

#include "rtnl.h"
#include "tap.h"

static struct rtnl_link lnk;

static struct rtnl_vf
vf_sample(void)
{
	struct rtnl_vf vf = {
		.index = 3, .has_mac = true, .mac = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 },
		.vlan = 100, .qos = 3, .vlan_proto = 0x8100, .min_tx_rate = 0, .max_tx_rate = 100,
		.spoofchk = 0, .trust = 1, .link_state = 2,
	};

	return vf;
}

/* Each request parses back (as a link message) to the values it carries. */
static void
test_requests_round_trip(void)
{
	char req[RTNL_REQ_SIZE];
	struct rtnl_vf vf = vf_sample();

	for (int a = 0; a < RTNL_VF_ATTR_MAX; a++) {
		size_t len = rtnl_req_setvf(req, 9, 7, a, &vf);
		const struct nlmsghdr *nlh = (const void *)req;

		ok(nlh->nlmsg_type == RTM_SETLINK && (nlh->nlmsg_flags & NLM_F_ACK) &&
		   nlh->nlmsg_seq == 9, "%s: RTM_SETLINK with an ACK", rtnl_vf_attr_to_string(a));
		is_int(rtnl_parse_link(req, len, &lnk), 0, "%s: parses", rtnl_vf_attr_to_string(a));
		ok(lnk.ifindex == 7 && lnk.nvfs == 1 && lnk.vfs[0].index == 3,
		   "%s: one VF, index 3, on ifindex 7", rtnl_vf_attr_to_string(a));
		ok(rtnl_vf_attr_equal(a, &vf, &lnk.vfs[0]), "%s: same value back",
		   rtnl_vf_attr_to_string(a));
	}
	/* 802.1ad can only be said with IFLA_VF_VLAN_LIST. */
	vf.vlan_proto = 0x88a8;
	rtnl_parse_link(req, rtnl_req_setvf(req, 1, 7, RTNL_VF_VLAN, &vf), &lnk);
	is_int(lnk.vfs[0].vlan_proto, 0x88a8, "802.1ad goes as a VLAN list with its protocol");
	is_int(lnk.vfs[0].vlan, 100, "and its VLAN");
	is_int(lnk.vfs[0].index, 3, "and its VF index");
}

static size_t
put_getlink_reply(char *buf, uint32_t seq)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	struct nlattr *list, *info, *vl;
	struct ifla_vf_mac mac = { .vf = 0, .mac = { 0x52, 0x54, 0, 1, 2, 3 } };
	struct ifla_vf_vlan vlan = { .vf = 0, .vlan = 5, .qos = 1 };
	struct ifla_vf_spoofchk sp = { .vf = 0, .setting = 1 };
	struct ifla_vf_trust tr = { .vf = 0, .setting = UINT32_MAX };	/* not reported */
	struct ifla_vf_vlan_info vi = { .vf = 0, .vlan = 5, .qos = 1, .vlan_proto = htons(0x8100) };

	nlh->nlmsg_type = RTM_NEWLINK;
	nlh->nlmsg_seq = seq;
	ifi->ifi_index = 4;
	ifi->ifi_flags = 1;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, "enp1s0");
	mnl_attr_put_u32(nlh, IFLA_NUM_VF, 1);
	list = mnl_attr_nest_start(nlh, IFLA_VFINFO_LIST);
	info = mnl_attr_nest_start(nlh, IFLA_VF_INFO);
	mnl_attr_put(nlh, IFLA_VF_MAC, sizeof(mac), &mac);
	mnl_attr_put(nlh, IFLA_VF_VLAN, sizeof(vlan), &vlan);
	mnl_attr_put(nlh, IFLA_VF_SPOOFCHK, sizeof(sp), &sp);
	mnl_attr_put(nlh, IFLA_VF_TRUST, sizeof(tr), &tr);
	vl = mnl_attr_nest_start(nlh, IFLA_VF_VLAN_LIST);
	mnl_attr_put(nlh, IFLA_VF_VLAN_INFO, sizeof(vi), &vi);
	mnl_attr_nest_end(nlh, vl);
	mnl_attr_nest_end(nlh, info);
	mnl_attr_nest_end(nlh, list);
	return nlh->nlmsg_len;
}

static int
keep_link(void *arg, const struct rtnl_link *l)
{
	memcpy(arg, l, sizeof(*l));
	return 0;
}

static void
test_walk(void)
{
	char buf[4096], ack[64];
	struct rtnl_sink sink = { .link = keep_link, .arg = &lnk };
	size_t len = put_getlink_reply(buf, 42);
	struct nlmsghdr *nlh;
	struct nlmsgerr *e;

	memset(&lnk, 0, sizeof(lnk));
	is_int(rtnl_walk(buf, len, 42, &sink, ack, sizeof(ack)), 1, "a single RTM_NEWLINK ends the answer");
	is_str(lnk.name, "enp1s0", "its name");
	ok(lnk.num_vf == 1 && lnk.has_vfinfo && lnk.nvfs == 1, "one VF listed");
	ok(lnk.vfs[0].has_mac && lnk.vfs[0].mac[5] == 3, "the VF's MAC");
	ok(lnk.vfs[0].vlan == 5 && lnk.vfs[0].qos == 1 && lnk.vfs[0].vlan_proto == 0x8100, "VLAN 5 QoS 1 802.1Q");
	ok(lnk.vfs[0].spoofchk == 1 && lnk.vfs[0].trust == -1, "trust 0xffffffff reads as not reported");
	ok(lnk.vfs[0].link_state == -1 && lnk.vfs[0].max_tx_rate == -1, "absent attributes are -1");
	is_int(rtnl_walk(buf, len, 41, &sink, ack, sizeof(ack)), 0, "another sequence number is skipped");

	/* An error with the kernel's words (extended ACK). */
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = NLMSG_ERROR;
	nlh->nlmsg_flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
	nlh->nlmsg_seq = 5;
	e = mnl_nlmsg_put_extra_header(nlh, sizeof(*e));
	e->error = -EPROTONOSUPPORT;
	e->msg.nlmsg_len = sizeof(e->msg);
	mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, "VF VLAN protocol not supported");
	is_int(rtnl_walk(buf, nlh->nlmsg_len, 5, NULL, ack, sizeof(ack)), -EPROTONOSUPPORT,
	       "NLMSG_ERROR is the kernel's -errno");
	is_str(ack, "VF VLAN protocol not supported", "with its extended ACK message");
	e->error = 0;
	is_int(rtnl_walk(buf, nlh->nlmsg_len, 5, NULL, ack, sizeof(ack)), 1, "error 0 is an ACK");
	e->error = 5;
	is_int(rtnl_walk(buf, nlh->nlmsg_len, 5, NULL, ack, sizeof(ack)), -EBADMSG,
	       "a positive error is malformed");

	/* A length with its top bit set (libmnl's mnl_nlmsg_ok lets it through). */
	nlh = (struct nlmsghdr *)buf;
	memset(buf, 0xad, 64);
	nlh->nlmsg_len = 0xadadadad;
	is_int(rtnl_walk(buf, 64, nlh->nlmsg_seq, &sink, ack, sizeof(ack)), 0,
	       "a message longer than the datagram is not read");
	/* An unaligned last message: libmnl reads attributes to the aligned end. */
	len = put_getlink_reply(buf, 6);
	nlh->nlmsg_len -= 1;
	is_int(rtnl_walk(buf, len - 1, 6, &sink, ack, sizeof(ack)), 0,
	       "a message whose padding is missing is not read");
}

static void
test_link_below(void)
{
	/* eno2 (3) in bond0 (10), bond0.5 (11) over bond0, br0 (12) with bond0.5. */
	struct rtnl_ifrel rel[] = {
		{ .ifindex = 3, .master = 10 }, { .ifindex = 10 }, { .ifindex = 11, .link = 10, .master = 12 },
		{ .ifindex = 12 }, { .ifindex = 2 }, { .ifindex = 20, .master = 21 }, { .ifindex = 21, .master = 20 },
	};
	size_t n = sizeof(rel) / sizeof(rel[0]);

	ok(rtnl_link_below(rel, n, 3, 3), "the PF itself");
	ok(rtnl_link_below(rel, n, 3, 10), "its bond");
	ok(rtnl_link_below(rel, n, 3, 11), "a VLAN over its bond");
	ok(rtnl_link_below(rel, n, 3, 12), "a bridge over that VLAN");
	ok(!rtnl_link_below(rel, n, 2, 12), "another PF is not under it");
	ok(!rtnl_link_below(rel, n, 20, 3), "a master loop ends");
	ok(!rtnl_link_below(rel, n, 0, 3), "no ifindex, nothing");
}

static void
test_equal(void)
{
	struct rtnl_vf w = vf_sample(), h = vf_sample();

	w.vlan = h.vlan = 0;
	w.qos = h.qos = 0;
	h.vlan_proto = 0x88a8;
	ok(rtnl_vf_attr_equal(RTNL_VF_VLAN, &w, &h), "no VLAN: the protocol does not matter");
	h.vlan = 7;
	ok(!rtnl_vf_attr_equal(RTNL_VF_VLAN, &w, &h), "a VLAN that differs");
	h.trust = -1;
	ok(rtnl_vf_attr_equal(RTNL_VF_TRUST, &w, &h), "an unreported setting differs from nothing");
	h.has_mac = true;
	h.mac[0] = 0x02;
	ok(!rtnl_vf_attr_equal(RTNL_VF_MAC, &w, &h), "a MAC that differs");
}

int
main(void)
{
	test_requests_round_trip();
	test_walk();
	test_link_below();
	test_equal();
	return tap_done();
}
