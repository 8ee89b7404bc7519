/* SPDX-License-Identifier: MIT */
/* sriov: rtnetlink requests and the parser of the kernel's answers (pure). */
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

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88a8

static const char *const attr_names[RTNL_VF_ATTR_MAX] = {
	[RTNL_VF_MAC] = "mac",
	[RTNL_VF_VLAN] = "vlan",
	[RTNL_VF_RATE] = "rate",
	[RTNL_VF_SPOOFCHK] = "spoofchk",
	[RTNL_VF_LINK_STATE] = "link_state",
	[RTNL_VF_TRUST] = "trust",
};

const char *
rtnl_vf_attr_to_string(enum rtnl_vf_attr a)
{
	return (unsigned)a < RTNL_VF_ATTR_MAX ? attr_names[a] : "?";
}

/* --- parsing ----------------------------------------------------------- */

/* A payload at least `size` bytes long, or NULL. */
static const void *
payload_of(const struct nlattr *a, size_t size)
{
	return mnl_attr_get_payload_len(a) >= size ? mnl_attr_get_payload(a) : NULL;
}

static uint32_t
u32_at(const void *p, size_t off)
{
	uint32_t v;

	memcpy(&v, (const char *)p + off, sizeof(v));
	return v;
}

/* Drivers that do not report a setting leave it 0xffffffff. */
static int64_t
setting(uint32_t v)
{
	return v == UINT32_MAX ? -1 : (int64_t)v;
}

static int
vf_vlan_list(const struct nlattr *list, struct rtnl_vf *vf, uint32_t *index, bool *found)
{
	const struct nlattr *a;

	mnl_attr_for_each_nested(a, list) {
		const void *p;

		if (mnl_attr_get_type(a) != IFLA_VF_VLAN_INFO)
			continue;
		p = payload_of(a, sizeof(struct ifla_vf_vlan_info));
		if (p == NULL)
			return -EBADMSG;
		*index = u32_at(p, 0);
		*found = true;
		vf->vlan = u32_at(p, 4);
		vf->qos = u32_at(p, 8);
		{
			uint16_t proto;

			memcpy(&proto, (const char *)p + 12, sizeof(proto));
			vf->vlan_proto = ntohs(proto);
		}
		return 0;	/* MAX_VLAN_LIST_LEN is 1 */
	}
	return 0;
}

static int
vf_info(const struct nlattr *info, struct rtnl_vf *vf)
{
	const struct nlattr *a;
	bool have_index = false;

	memset(vf, 0, sizeof(*vf));
	vf->vlan = vf->qos = vf->min_tx_rate = vf->max_tx_rate = -1;
	vf->spoofchk = vf->trust = vf->link_state = -1;
	vf->vlan_proto = ETH_P_8021Q_;
	mnl_attr_for_each_nested(a, info) {
		const void *p = NULL;

		switch (mnl_attr_get_type(a)) {
		case IFLA_VF_MAC:
			if ((p = payload_of(a, sizeof(struct ifla_vf_mac))) == NULL)
				return -EBADMSG;
			memcpy(vf->mac, (const char *)p + 4, 6);
			vf->has_mac = true;
			break;
		case IFLA_VF_VLAN:
			if ((p = payload_of(a, sizeof(struct ifla_vf_vlan))) == NULL)
				return -EBADMSG;
			vf->vlan = u32_at(p, 4);
			vf->qos = u32_at(p, 8);
			break;
		case IFLA_VF_VLAN_LIST: {
			uint32_t idx = 0;
			bool found = false;

			if (vf_vlan_list(a, vf, &idx, &found) < 0)
				return -EBADMSG;
			if (found && !have_index) {
				vf->index = idx;
				have_index = true;
			}
			break;
		}
		case IFLA_VF_RATE:
			if ((p = payload_of(a, sizeof(struct ifla_vf_rate))) == NULL)
				return -EBADMSG;
			vf->min_tx_rate = u32_at(p, 4);
			vf->max_tx_rate = u32_at(p, 8);
			break;
		case IFLA_VF_TX_RATE:
			/* The legacy max rate: IFLA_VF_RATE, when there, says more. */
			if ((p = payload_of(a, sizeof(struct ifla_vf_tx_rate))) == NULL)
				return -EBADMSG;
			if (vf->max_tx_rate < 0)
				vf->max_tx_rate = u32_at(p, 4);
			break;
		case IFLA_VF_SPOOFCHK:
			if ((p = payload_of(a, sizeof(struct ifla_vf_spoofchk))) == NULL)
				return -EBADMSG;
			vf->spoofchk = setting(u32_at(p, 4));
			break;
		case IFLA_VF_LINK_STATE:
			if ((p = payload_of(a, sizeof(struct ifla_vf_link_state))) == NULL)
				return -EBADMSG;
			vf->link_state = setting(u32_at(p, 4));
			break;
		case IFLA_VF_TRUST:
			if ((p = payload_of(a, sizeof(struct ifla_vf_trust))) == NULL)
				return -EBADMSG;
			vf->trust = setting(u32_at(p, 4));
			break;
		default:
			break;
		}
		/* Every VF attribute starts with the VF's index. */
		if (p != NULL) {
			uint32_t idx = u32_at(p, 0);

			if (mnl_attr_get_type(a) == IFLA_VF_MAC || !have_index) {
				vf->index = idx;
				have_index = true;
			}
		}
	}
	return have_index ? 0 : -EBADMSG;
}

static int
vfinfo_list(const struct nlattr *list, struct rtnl_link *out)
{
	const struct nlattr *a;

	out->has_vfinfo = true;
	mnl_attr_for_each_nested(a, list) {
		if (mnl_attr_get_type(a) != IFLA_VF_INFO)
			return -EBADMSG;
		if (out->nvfs >= RTNL_VF_MAX)
			return 0;	/* more than we keep: the first ones */
		if (vf_info(a, &out->vfs[out->nvfs]) < 0)
			return -EBADMSG;
		out->nvfs++;
	}
	return 0;
}

static void
copy_str(char *dst, size_t size, const struct nlattr *a)
{
	size_t n = mnl_attr_get_payload_len(a);
	const char *s = mnl_attr_get_payload(a);

	if (n >= size)
		n = size - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	dst[strnlen(dst, n)] = '\0';
}

static int
linkinfo(const struct nlattr *nest, struct rtnl_link *out)
{
	const struct nlattr *a;

	mnl_attr_for_each_nested(a, nest) {
		if (mnl_attr_get_type(a) == IFLA_INFO_KIND)
			copy_str(out->kind, sizeof(out->kind), a);
	}
	return 0;
}

int
rtnl_parse_link(const void *msg, size_t len, struct rtnl_link *out)
{
	const struct nlmsghdr *nlh = msg;
	const struct ifinfomsg *ifi;
	const struct nlattr *a;
	size_t hdr = MNL_ALIGN(sizeof(struct ifinfomsg));

	memset(out, 0, offsetof(struct rtnl_link, vfs));
	out->operstate = -1;
	out->num_vf = -1;
	/* libmnl walks attributes up to the aligned end of the message. */
	if (len < sizeof(*nlh) || MNL_ALIGN((size_t)nlh->nlmsg_len) > len ||
	    nlh->nlmsg_len < MNL_NLMSG_HDRLEN + hdr)
		return -EBADMSG;
	ifi = mnl_nlmsg_get_payload(nlh);
	out->ifindex = ifi->ifi_index;
	out->flags = ifi->ifi_flags;
	mnl_attr_for_each(a, nlh, hdr) {
		switch (mnl_attr_get_type(a)) {
		case IFLA_IFNAME:
			copy_str(out->name, sizeof(out->name), a);
			break;
		case IFLA_MASTER:
			if (mnl_attr_get_payload_len(a) < 4)
				return -EBADMSG;
			out->master = (int)mnl_attr_get_u32(a);
			break;
		case IFLA_LINK:
			if (mnl_attr_get_payload_len(a) < 4)
				return -EBADMSG;
			out->link = (int)mnl_attr_get_u32(a);
			break;
		case IFLA_OPERSTATE:
			if (mnl_attr_get_payload_len(a) < 1)
				return -EBADMSG;
			out->operstate = mnl_attr_get_u8(a);
			break;
		case IFLA_NUM_VF:
			if (mnl_attr_get_payload_len(a) < 4)
				return -EBADMSG;
			out->num_vf = (int)(mnl_attr_get_u32(a) & 0xffff);
			break;
		case IFLA_VFINFO_LIST:
			if (vfinfo_list(a, out) < 0)
				return -EBADMSG;
			break;
		case IFLA_LINKINFO:
			linkinfo(a, out);
			break;
		default:
			break;
		}
	}
	return 0;
}

int
rtnl_parse_route(const void *msg, size_t len, struct rtnl_route *out)
{
	const struct nlmsghdr *nlh = msg;
	const struct rtmsg *rtm;
	const struct nlattr *a;
	size_t hdr = MNL_ALIGN(sizeof(struct rtmsg));
	uint32_t table;

	memset(out, 0, sizeof(*out));
	/* libmnl walks attributes up to the aligned end of the message. */
	if (len < sizeof(*nlh) || MNL_ALIGN((size_t)nlh->nlmsg_len) > len ||
	    nlh->nlmsg_len < MNL_NLMSG_HDRLEN + hdr)
		return -EBADMSG;
	rtm = mnl_nlmsg_get_payload(nlh);
	out->family = rtm->rtm_family;
	table = rtm->rtm_table;
	mnl_attr_for_each(a, nlh, hdr) {
		switch (mnl_attr_get_type(a)) {
		case RTA_TABLE:
			if (mnl_attr_get_payload_len(a) < 4)
				return -EBADMSG;
			table = mnl_attr_get_u32(a);
			break;
		case RTA_OIF:
			if (mnl_attr_get_payload_len(a) < 4)
				return -EBADMSG;
			if (out->noifs < RTNL_ROUTE_OIF_MAX)
				out->oifs[out->noifs++] = (int)mnl_attr_get_u32(a);
			break;
		case RTA_MULTIPATH: {
			/* struct rtnexthop records, each with its ifindex. */
			const char *p = mnl_attr_get_payload(a);
			size_t left = mnl_attr_get_payload_len(a);

			while (left >= sizeof(struct rtnexthop)) {
				struct rtnexthop nh;

				memcpy(&nh, p, sizeof(nh));
				if (nh.rtnh_len < sizeof(nh) || nh.rtnh_len > left)
					break;
				if (out->noifs < RTNL_ROUTE_OIF_MAX)
					out->oifs[out->noifs++] = nh.rtnh_ifindex;
				{
					size_t step = (size_t)RTNH_ALIGN(nh.rtnh_len);

					if (step >= left)
						break;
					left -= step;
					p += step;
				}
			}
			break;
		}
		default:
			break;
		}
	}
	out->is_default = rtm->rtm_dst_len == 0 && table == RT_TABLE_MAIN &&
			  rtm->rtm_type == RTN_UNICAST;
	return 0;
}

/* mnl_nlmsg_ok casts nlmsg_len to int: a length with its top bit set
 * passes there. Ours compares unsigned. */
static bool
msg_ok(const struct nlmsghdr *nlh, int left)
{
	return left >= (int)sizeof(*nlh) && nlh->nlmsg_len >= sizeof(*nlh) &&
	       nlh->nlmsg_len <= (unsigned int)left && MNL_ALIGN((size_t)nlh->nlmsg_len) <= (size_t)left;
}

int
rtnl_walk(const void *buf, size_t len, uint32_t seq, const struct rtnl_sink *sink,
	  char *ext_ack, size_t ext_ack_size)
{
	const struct nlmsghdr *nlh = buf;
	int left = (int)(len > INT32_MAX ? INT32_MAX : len);
	struct rtnl_link *link = NULL;
	int ret = 0;

	if (ext_ack && ext_ack_size)
		ext_ack[0] = '\0';
	while (msg_ok(nlh, left)) {
		if (nlh->nlmsg_seq != seq) {
			nlh = mnl_nlmsg_next(nlh, &left);
			continue;
		}
		if (sink && sink->msg && nlh->nlmsg_type != NLMSG_DONE &&
		    nlh->nlmsg_type != NLMSG_ERROR) {
			if ((ret = sink->msg(sink->arg, nlh, nlh->nlmsg_len)) < 0)
				goto out;
			goto next;
		}
		switch (nlh->nlmsg_type) {
		case NLMSG_DONE:
			ret = 1;
			goto out;
		case NLMSG_ERROR: {
			const struct nlmsgerr *e;

			if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(*e)) {
				ret = -EBADMSG;
				goto out;
			}
			e = mnl_nlmsg_get_payload(nlh);
			/* Extended ACK: the kernel's message after the request. */
			if (ext_ack && ext_ack_size && (nlh->nlmsg_flags & NLM_F_ACK_TLVS)) {
				size_t off = sizeof(*e);
				const struct nlattr *a;

				if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
					off += e->msg.nlmsg_len > sizeof(e->msg) ? e->msg.nlmsg_len - sizeof(e->msg) : 0;
				off = MNL_ALIGN(off);
				if (off < nlh->nlmsg_len - MNL_NLMSG_HDRLEN) {
					mnl_attr_for_each(a, nlh, off) {
						if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG)
							copy_str(ext_ack, ext_ack_size, a);
					}
				}
			}
			ret = e->error > 0 || e->error < -4095 ? -EBADMSG : (e->error < 0 ? e->error : 1);
			goto out;
		}
		case RTM_NEWLINK:
			if (sink && sink->link) {
				if (link == NULL && (link = malloc(sizeof(*link))) == NULL) {
					ret = -ENOMEM;
					goto out;
				}
				if (rtnl_parse_link(nlh, (size_t)left, link) < 0) {
					ret = -EBADMSG;
					goto out;
				}
				if ((ret = sink->link(sink->arg, link)) < 0)
					goto out;
			}
			break;
		case RTM_NEWROUTE:
			if (sink && sink->route) {
				struct rtnl_route r;

				if (rtnl_parse_route(nlh, (size_t)left, &r) < 0) {
					ret = -EBADMSG;
					goto out;
				}
				if ((ret = sink->route(sink->arg, &r)) < 0)
					goto out;
			}
			break;
		default:
			break;
		}
next:
		if (!(nlh->nlmsg_flags & NLM_F_MULTI)) {
			ret = 1;	/* a single answer (RTM_GETLINK of one link) */
			goto out;
		}
		nlh = mnl_nlmsg_next(nlh, &left);
	}
	ret = 0;
out:
	free(link);
	return ret;
}

/* --- generic netlink: devlink ------------------------------------------- */

/* A generic netlink message: its header checked as the RTM_ parsers do. */
static int
genl_check(const void *msg, size_t len)
{
	const struct nlmsghdr *nlh = msg;

	/* libmnl walks attributes up to the aligned end of the message. */
	if (len < sizeof(*nlh) || MNL_ALIGN((size_t)nlh->nlmsg_len) > len ||
	    nlh->nlmsg_len < MNL_NLMSG_HDRLEN + GENL_HDRLEN)
		return -EBADMSG;
	return 0;
}

int
rtnl_parse_genl_family(const void *msg, size_t len, uint16_t *id)
{
	const struct nlmsghdr *nlh = msg;
	const struct nlattr *a;
	bool found = false;

	*id = 0;
	if (genl_check(msg, len) < 0)
		return -EBADMSG;
	mnl_attr_for_each(a, nlh, GENL_HDRLEN) {
		if (mnl_attr_get_type(a) != CTRL_ATTR_FAMILY_ID)
			continue;
		if (mnl_attr_get_payload_len(a) < sizeof(uint16_t))
			return -EBADMSG;
		*id = mnl_attr_get_u16(a);
		found = true;
	}
	/* Ids below NLMSG_MIN_TYPE are netlink's own messages. */
	return found && *id >= NLMSG_MIN_TYPE ? 0 : -EBADMSG;
}

int
rtnl_parse_eswitch(const void *msg, size_t len, struct rtnl_eswitch *out)
{
	const struct nlmsghdr *nlh = msg;
	const struct nlattr *a;

	memset(out, 0, sizeof(*out));
	out->mode = -1;
	if (genl_check(msg, len) < 0)
		return -EBADMSG;
	mnl_attr_for_each(a, nlh, GENL_HDRLEN) {
		switch (mnl_attr_get_type(a)) {
		case DEVLINK_ATTR_BUS_NAME:
			copy_str(out->bus, sizeof(out->bus), a);
			break;
		case DEVLINK_ATTR_DEV_NAME:
			copy_str(out->dev, sizeof(out->dev), a);
			break;
		case DEVLINK_ATTR_ESWITCH_MODE:
			if (mnl_attr_get_payload_len(a) < sizeof(uint16_t))
				return -EBADMSG;
			out->mode = mnl_attr_get_u16(a);
			break;
		default:
			break;
		}
	}
	return 0;
}

const char *
rtnl_eswitch_mode_to_string(int mode)
{
	switch (mode) {
	case DEVLINK_ESWITCH_MODE_LEGACY:
		return "legacy";
	case DEVLINK_ESWITCH_MODE_SWITCHDEV:
		return "switchdev";
	default:
		return NULL;
	}
}

/* --- requests ---------------------------------------------------------- */

static struct nlmsghdr *
req_start(void *buf, uint16_t type, uint16_t flags, uint32_t seq)
{
	struct nlmsghdr *nlh;

	memset(buf, 0, RTNL_REQ_SIZE);
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	nlh->nlmsg_seq = seq;
	return nlh;
}

size_t
rtnl_req_getlink_vf(void *buf, uint32_t seq, int ifindex)
{
	struct nlmsghdr *nlh = req_start(buf, RTM_GETLINK, 0, seq);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS);
	return nlh->nlmsg_len;
}

size_t
rtnl_req_dumplinks(void *buf, uint32_t seq)
{
	struct nlmsghdr *nlh = req_start(buf, RTM_GETLINK, NLM_F_DUMP, seq);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

	ifi->ifi_family = AF_UNSPEC;
	return nlh->nlmsg_len;
}

size_t
rtnl_req_dumproutes(void *buf, uint32_t seq, int family)
{
	struct nlmsghdr *nlh = req_start(buf, RTM_GETROUTE, NLM_F_DUMP, seq);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));

	rtm->rtm_family = (unsigned char)family;
	return nlh->nlmsg_len;
}

static struct nlmsghdr *
genl_start(void *buf, uint16_t family, uint8_t cmd, uint8_t version, uint32_t seq)
{
	struct nlmsghdr *nlh = req_start(buf, family, 0, seq);
	struct genlmsghdr *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));

	g->cmd = cmd;
	g->version = version;
	return nlh;
}

/* A string attribute cut to what a request has room for. */
static void
put_str(struct nlmsghdr *nlh, uint16_t type, const char *s)
{
	char v[64];
	size_t n = strnlen(s, sizeof(v) - 1);

	memcpy(v, s, n);
	v[n] = '\0';
	mnl_attr_put_strz(nlh, type, v);
}

size_t
rtnl_req_genl_family(void *buf, uint32_t seq, const char *name)
{
	struct nlmsghdr *nlh = genl_start(buf, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, seq);

	put_str(nlh, CTRL_ATTR_FAMILY_NAME, name);
	return nlh->nlmsg_len;
}

size_t
rtnl_req_eswitch_get(void *buf, uint32_t seq, uint16_t family, const char *bus, const char *dev)
{
	struct nlmsghdr *nlh = genl_start(buf, family, DEVLINK_CMD_ESWITCH_GET,
					  DEVLINK_GENL_VERSION, seq);

	put_str(nlh, DEVLINK_ATTR_BUS_NAME, bus);
	put_str(nlh, DEVLINK_ATTR_DEV_NAME, dev);
	return nlh->nlmsg_len;
}

size_t
rtnl_req_setvf(void *buf, uint32_t seq, int ifindex, enum rtnl_vf_attr a,
	       const struct rtnl_vf *vf)
{
	struct nlmsghdr *nlh = req_start(buf, RTM_SETLINK, NLM_F_ACK, seq);
	struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	struct nlattr *list, *info;

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	list = mnl_attr_nest_start(nlh, IFLA_VFINFO_LIST);
	info = mnl_attr_nest_start(nlh, IFLA_VF_INFO);
	switch (a) {
	case RTNL_VF_MAC: {
		struct ifla_vf_mac m = { .vf = vf->index };

		memcpy(m.mac, vf->mac, 6);
		mnl_attr_put(nlh, IFLA_VF_MAC, sizeof(m), &m);
		break;
	}
	case RTNL_VF_VLAN:
		if (vf->vlan_proto == ETH_P_8021AD_) {
			struct ifla_vf_vlan_info vi = {
				.vf = vf->index, .vlan = (uint32_t)vf->vlan, .qos = (uint32_t)vf->qos,
				.vlan_proto = htons(ETH_P_8021AD_),
			};
			struct nlattr *vl = mnl_attr_nest_start(nlh, IFLA_VF_VLAN_LIST);

			mnl_attr_put(nlh, IFLA_VF_VLAN_INFO, sizeof(vi), &vi);
			mnl_attr_nest_end(nlh, vl);
		} else {
			struct ifla_vf_vlan v = {
				.vf = vf->index, .vlan = (uint32_t)vf->vlan, .qos = (uint32_t)vf->qos,
			};

			mnl_attr_put(nlh, IFLA_VF_VLAN, sizeof(v), &v);
		}
		break;
	case RTNL_VF_RATE: {
		struct ifla_vf_rate r = {
			.vf = vf->index, .min_tx_rate = (uint32_t)vf->min_tx_rate,
			.max_tx_rate = (uint32_t)vf->max_tx_rate,
		};

		mnl_attr_put(nlh, IFLA_VF_RATE, sizeof(r), &r);
		break;
	}
	case RTNL_VF_SPOOFCHK: {
		struct ifla_vf_spoofchk s = { .vf = vf->index, .setting = (uint32_t)vf->spoofchk };

		mnl_attr_put(nlh, IFLA_VF_SPOOFCHK, sizeof(s), &s);
		break;
	}
	case RTNL_VF_LINK_STATE: {
		struct ifla_vf_link_state l = { .vf = vf->index, .link_state = (uint32_t)vf->link_state };

		mnl_attr_put(nlh, IFLA_VF_LINK_STATE, sizeof(l), &l);
		break;
	}
	case RTNL_VF_TRUST: {
		struct ifla_vf_trust t = { .vf = vf->index, .setting = (uint32_t)vf->trust };

		mnl_attr_put(nlh, IFLA_VF_TRUST, sizeof(t), &t);
		break;
	}
	default:
		break;
	}
	mnl_attr_nest_end(nlh, info);
	mnl_attr_nest_end(nlh, list);
	return nlh->nlmsg_len;
}

bool
rtnl_vf_attr_equal(enum rtnl_vf_attr a, const struct rtnl_vf *want, const struct rtnl_vf *have)
{
	switch (a) {
	case RTNL_VF_MAC:
		return !have->has_mac || memcmp(want->mac, have->mac, 6) == 0;
	case RTNL_VF_VLAN:
		if (have->vlan < 0)
			return true;
		/* No VLAN: the protocol and priority mean nothing. */
		if (want->vlan == 0 && have->vlan == 0)
			return want->qos == have->qos || have->qos < 0;
		return want->vlan == have->vlan && want->qos == have->qos &&
		       want->vlan_proto == have->vlan_proto;
	case RTNL_VF_RATE:
		return have->max_tx_rate < 0 ||
		       (want->max_tx_rate == have->max_tx_rate &&
			(have->min_tx_rate < 0 || want->min_tx_rate == have->min_tx_rate));
	case RTNL_VF_SPOOFCHK:
		return have->spoofchk < 0 || want->spoofchk == have->spoofchk;
	case RTNL_VF_LINK_STATE:
		return have->link_state < 0 || want->link_state == have->link_state;
	case RTNL_VF_TRUST:
		return have->trust < 0 || want->trust == have->trust;
	default:
		return true;
	}
}

static const struct rtnl_ifrel *
rel_find(const struct rtnl_ifrel *rel, size_t n, int ifindex)
{
	for (size_t i = 0; i < n; i++)
		if (rel[i].ifindex == ifindex)
			return &rel[i];
	return NULL;
}

bool
rtnl_link_below(const struct rtnl_ifrel *rel, size_t n, int pf, int top)
{
	int reach[64];
	size_t nreach = 0, head = 0;

	if (pf <= 0 || top <= 0)
		return false;
	reach[nreach++] = pf;
	/* Breadth first upwards: masters (bond, bridge) and devices over it (VLAN). */
	while (head < nreach) {
		int x = reach[head++];
		const struct rtnl_ifrel *r = rel_find(rel, n, x);

		if (x == top)
			return true;
		if (r && r->master > 0 && nreach < 64) {
			bool seen = false;

			for (size_t k = 0; k < nreach; k++)
				seen |= reach[k] == r->master;
			if (!seen)
				reach[nreach++] = r->master;
		}
		for (size_t i = 0; i < n && nreach < 64; i++) {
			bool seen = false;

			if (rel[i].link != x || rel[i].ifindex == x)
				continue;
			for (size_t k = 0; k < nreach; k++)
				seen |= reach[k] == rel[i].ifindex;
			if (!seen)
				reach[nreach++] = rel[i].ifindex;
		}
	}
	return false;
}
