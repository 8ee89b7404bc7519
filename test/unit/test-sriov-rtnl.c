/* SPDX-License-Identifier: MIT */
/* Unit tests of the sriov module's rtnetlink requests and reply parser. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/devlink.h>
#include <linux/genetlink.h>
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

/* A generic netlink answer: type (family id), command, then attributes. */
static struct nlmsghdr *
genl_put(char *buf, uint16_t type, uint8_t cmd, uint32_t seq)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct genlmsghdr *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));

	nlh->nlmsg_type = type;
	nlh->nlmsg_seq = seq;
	g->cmd = cmd;
	g->version = 1;
	return nlh;
}

static int
keep_family(void *arg, const void *msg, size_t len)
{
	return rtnl_parse_genl_family(msg, len, arg);
}

static int
keep_eswitch(void *arg, const void *msg, size_t len)
{
	return rtnl_parse_eswitch(msg, len, arg);
}

static void
test_devlink(void)
{
	char buf[1024], ack[64];
	struct nlmsghdr *nlh;
	const struct nlattr *a;
	const struct genlmsghdr *g;
	struct rtnl_eswitch e;
	uint16_t id = 0;
	struct rtnl_sink fam = { .msg = keep_family, .arg = &id };
	struct rtnl_sink esw = { .msg = keep_eswitch, .arg = &e };
	int n = 0;

	/* The requests. */
	nlh = (struct nlmsghdr *)buf;
	rtnl_req_genl_family(buf, 3, "devlink");
	g = mnl_nlmsg_get_payload(nlh);
	ok(nlh->nlmsg_type == GENL_ID_CTRL && g->cmd == CTRL_CMD_GETFAMILY && nlh->nlmsg_seq == 3 &&
	   !(nlh->nlmsg_flags & NLM_F_DUMP), "GETFAMILY to the controller, not a dump");
	mnl_attr_for_each(a, nlh, GENL_HDRLEN)
		n += mnl_attr_get_type(a) == CTRL_ATTR_FAMILY_NAME &&
		     strcmp(mnl_attr_get_str(a), "devlink") == 0;
	is_int(n, 1, "naming \"devlink\"");
	rtnl_req_eswitch_get(buf, 4, 0x1b, "pci", "0000:01:00.0");
	ok(nlh->nlmsg_type == 0x1b && g->cmd == DEVLINK_CMD_ESWITCH_GET &&
	   g->version == DEVLINK_GENL_VERSION, "ESWITCH_GET to the devlink family id");
	is_int(rtnl_parse_eswitch(buf, nlh->nlmsg_len, &e), 0, "the request parses as devlink attributes");
	ok(strcmp(e.bus, "pci") == 0 && strcmp(e.dev, "0000:01:00.0") == 0 && e.mode == -1,
	   "bus \"pci\", the PF's address, no mode");

	/* The controller's answer: its type (GENL_ID_CTRL) is RTM_NEWLINK's
	 * number, so it goes to .msg, never to a link parser. */
	nlh = genl_put(buf, GENL_ID_CTRL, CTRL_CMD_NEWFAMILY, 8);
	mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, "devlink");
	mnl_attr_put_u16(nlh, CTRL_ATTR_FAMILY_ID, 0x1b);
	is_int(rtnl_walk(buf, nlh->nlmsg_len, 8, &fam, ack, sizeof(ack)), 1, "the family answer ends the call");
	is_int(id, 0x1b, "the devlink family id");
	nlh = genl_put(buf, GENL_ID_CTRL, CTRL_CMD_NEWFAMILY, 8);
	mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, "devlink");
	is_int(rtnl_parse_genl_family(buf, nlh->nlmsg_len, &id), -EBADMSG, "an answer without an id is malformed");
	mnl_attr_put(nlh, CTRL_ATTR_FAMILY_ID, 1, "\x1b");
	is_int(rtnl_parse_genl_family(buf, nlh->nlmsg_len, &id), -EBADMSG, "a one-byte id is malformed");

	/* devlink's answer. */
	nlh = genl_put(buf, 0x1b, DEVLINK_CMD_ESWITCH_GET, 9);
	mnl_attr_put_strz(nlh, DEVLINK_ATTR_BUS_NAME, "pci");
	mnl_attr_put_strz(nlh, DEVLINK_ATTR_DEV_NAME, "0000:01:00.0");
	mnl_attr_put_u16(nlh, DEVLINK_ATTR_ESWITCH_MODE, DEVLINK_ESWITCH_MODE_SWITCHDEV);
	mnl_attr_put_u8(nlh, DEVLINK_ATTR_ESWITCH_INLINE_MODE, 0);
	memset(&e, 0, sizeof(e));
	is_int(rtnl_walk(buf, nlh->nlmsg_len, 9, &esw, ack, sizeof(ack)), 1, "the eswitch answer ends the call");
	ok(e.mode == DEVLINK_ESWITCH_MODE_SWITCHDEV && strcmp(e.dev, "0000:01:00.0") == 0 &&
	   strcmp(e.bus, "pci") == 0, "switchdev, for that PF");
	is_str(rtnl_eswitch_mode_to_string(e.mode), "switchdev", "says switchdev");
	is_str(rtnl_eswitch_mode_to_string(DEVLINK_ESWITCH_MODE_LEGACY), "legacy", "0 says legacy");
	ok(rtnl_eswitch_mode_to_string(-1) == NULL && rtnl_eswitch_mode_to_string(7) == NULL,
	   "absent or unknown: nothing");
	nlh = genl_put(buf, 0x1b, DEVLINK_CMD_ESWITCH_GET, 9);
	mnl_attr_put(nlh, DEVLINK_ATTR_ESWITCH_MODE, 1, "\x01");
	is_int(rtnl_parse_eswitch(buf, nlh->nlmsg_len, &e), -EBADMSG, "a one-byte mode is malformed");
	nlh->nlmsg_len = MNL_NLMSG_HDRLEN + 2;
	is_int(rtnl_parse_eswitch(buf, nlh->nlmsg_len, &e), -EBADMSG, "no room for the genl header");

	/* igb: a driver without a devlink eswitch answers with an error. */
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = NLMSG_ERROR;
	nlh->nlmsg_seq = 10;
	((struct nlmsgerr *)mnl_nlmsg_put_extra_header(nlh, sizeof(struct nlmsgerr)))->error = -EOPNOTSUPP;
	e.mode = 5;
	is_int(rtnl_walk(buf, nlh->nlmsg_len, 10, &esw, ack, sizeof(ack)), -EOPNOTSUPP,
	       "EOPNOTSUPP comes back as the kernel's -errno");
	is_int(e.mode, 5, "and nothing was parsed");
}

int
main(void)
{
	test_requests_round_trip();
	test_walk();
	test_link_below();
	test_equal();
	test_devlink();
	return tap_done();
}
