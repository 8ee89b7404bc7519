/* SPDX-License-Identifier: MIT */
/* sriov: rtnetlink messages for VF attributes, built and parsed without I/O
 * (the worker ops send them; the fuzz target and unit tests drive these). */
#ifndef SRIOV_RTNL_H
#define SRIOV_RTNL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <net/if.h>

/* The most VFs one PF reports that we keep (igb 7, ixgbe 63, mlx5 127...). */
#define RTNL_VF_MAX 256

/* One VF as RTM_GETLINK reports it (IFLA_VFINFO_LIST). -1: not reported
 * (drivers without trust/spoofchk answer 0xffffffff, kept as -1). */
struct rtnl_vf {
	uint32_t index;
	bool has_mac;
	uint8_t mac[6];
	int64_t vlan;			/* 0-4095, 0 = none; -1 absent */
	int64_t qos;
	int vlan_proto;			/* 0x8100 or 0x88a8 (host order); 0x8100 when absent */
	int64_t min_tx_rate;		/* Mbps; -1 absent */
	int64_t max_tx_rate;
	int64_t spoofchk;		/* 0/1; -1 not reported */
	int64_t trust;
	int64_t link_state;		/* 0 auto, 1 enable, 2 disable; -1 absent */
};

/* One link (RTM_NEWLINK). */
struct rtnl_link {
	int ifindex;
	char name[IF_NAMESIZE];
	char kind[16];			/* IFLA_INFO_KIND ("bond", "bridge", "vlan"), "" */
	int master;			/* IFLA_MASTER, 0 none */
	int link;			/* IFLA_LINK (a VLAN's lower device), 0 none */
	unsigned int flags;		/* ifi_flags */
	int operstate;			/* IFLA_OPERSTATE, -1 absent */
	int num_vf;			/* IFLA_NUM_VF, -1 absent */
	bool has_vfinfo;		/* IFLA_VFINFO_LIST was there */
	size_t nvfs;
	struct rtnl_vf vfs[RTNL_VF_MAX];
};

/* One route (RTM_NEWROUTE): whether it is a default route of the main
 * table, and its output interfaces (the multipath ones too). */
#define RTNL_ROUTE_OIF_MAX 16
struct rtnl_route {
	int family;
	bool is_default;
	size_t noifs;
	int oifs[RTNL_ROUTE_OIF_MAX];
};

/* What one received datagram held. */
enum rtnl_msg_kind {
	RTNL_MSG_LINK = 0,
	RTNL_MSG_ROUTE,
	RTNL_MSG_DONE,			/* NLMSG_DONE */
	RTNL_MSG_ERROR,			/* NLMSG_ERROR: error 0 is an ACK */
	RTNL_MSG_OTHER,
	RTNL_MSG_KIND_MAX
};

/* Called for each message of a datagram; returns 0 to go on, < 0 to stop
 * (that value is returned by rtnl_walk). link/route valid only during the call. */
struct rtnl_sink {
	int (*link)(void *arg, const struct rtnl_link *l);
	int (*route)(void *arg, const struct rtnl_route *r);
	/* Set: every message other than NLMSG_DONE/NLMSG_ERROR goes here
	 * instead (msg, its nlmsg_len): generic netlink answers, whose family
	 * ids share numbers with RTM_ types. */
	int (*msg)(void *arg, const void *msg, size_t len);
	void *arg;
};

/* Walks the messages of one datagram (buf, len) whose sequence number is
 * seq (others are skipped). Returns 1 when it ended the answer (NLMSG_DONE,
 * an ACK, or a non-multipart reply), 0 when more datagrams follow, the
 * kernel's -errno of an NLMSG_ERROR, -EBADMSG for a malformed message, or
 * what a sink callback returned. *ext_ack, when not NULL, gets the kernel's
 * extended-ACK message text ("" when none). */
int rtnl_walk(const void *buf, size_t len, uint32_t seq, const struct rtnl_sink *sink,
	      char *ext_ack, size_t ext_ack_size);

/* Parses one RTM_NEWLINK message (header included). Returns 0 or -EBADMSG. */
int rtnl_parse_link(const void *msg, size_t len, struct rtnl_link *out);
/* Parses one RTM_NEWROUTE message. Returns 0 or -EBADMSG. */
int rtnl_parse_route(const void *msg, size_t len, struct rtnl_route *out);

/* --- requests: each writes one message into buf (size at least
 * RTNL_REQ_SIZE) and returns its length --- */
#define RTNL_REQ_SIZE 512

/* RTM_GETLINK of one ifindex with the VF filter (RTEXT_FILTER_VF,
 * RTEXT_FILTER_SKIP_STATS). */
size_t rtnl_req_getlink_vf(void *buf, uint32_t seq, int ifindex);
/* RTM_GETLINK dump of every link (no VF filter). */
size_t rtnl_req_dumplinks(void *buf, uint32_t seq);
/* RTM_GETROUTE dump of one family (AF_INET, AF_INET6). */
size_t rtnl_req_dumproutes(void *buf, uint32_t seq, int family);

/* The VF attributes one RTM_SETLINK sets, each alone (so an error names it). */
enum rtnl_vf_attr {
	RTNL_VF_MAC = 0,
	RTNL_VF_VLAN,			/* vlan, qos, vlan_proto */
	RTNL_VF_RATE,			/* min_tx_rate, max_tx_rate */
	RTNL_VF_SPOOFCHK,
	RTNL_VF_LINK_STATE,
	RTNL_VF_TRUST,
	RTNL_VF_ATTR_MAX
};
/* The attribute's name in errors and JSON ("mac", "vlan"...). */
const char *rtnl_vf_attr_to_string(enum rtnl_vf_attr a);

/* RTM_SETLINK on the PF (ifindex) setting attribute `a` of VF vf->index to
 * vf's values, with NLM_F_ACK. 802.1ad VLANs go as IFLA_VF_VLAN_LIST (the
 * only way to name the protocol), 802.1Q as IFLA_VF_VLAN. */
size_t rtnl_req_setvf(void *buf, uint32_t seq, int ifindex, enum rtnl_vf_attr a,
		      const struct rtnl_vf *vf);

/* Whether attribute a of `have` already equals `want` (unreported values
 * count as equal: nothing to write, nothing to compare). */
bool rtnl_vf_attr_equal(enum rtnl_vf_attr a, const struct rtnl_vf *want,
			const struct rtnl_vf *have);

/* --- generic netlink: devlink's eswitch mode of a PF --- */

/* CTRL_CMD_GETFAMILY of the family `name` ("devlink"). */
size_t rtnl_req_genl_family(void *buf, uint32_t seq, const char *name);
/* Parses the controller's answer (CTRL_CMD_NEWFAMILY): *id gets
 * CTRL_ATTR_FAMILY_ID. Returns 0, or -EBADMSG (malformed, or no id). */
int rtnl_parse_genl_family(const void *msg, size_t len, uint16_t *id);

/* DEVLINK_CMD_ESWITCH_GET of the devlink instance bus/dev ("pci",
 * "0000:01:00.0") on the devlink family id `family`. */
size_t rtnl_req_eswitch_get(void *buf, uint32_t seq, uint16_t family, const char *bus,
			    const char *dev);

/* One devlink ESWITCH_GET answer. */
struct rtnl_eswitch {
	char bus[16];			/* DEVLINK_ATTR_BUS_NAME, "" absent */
	char dev[64];			/* DEVLINK_ATTR_DEV_NAME, "" absent */
	int mode;			/* DEVLINK_ATTR_ESWITCH_MODE (0 legacy, 1 switchdev); -1 absent */
};
/* Parses a devlink ESWITCH_GET answer (header included). Returns 0 or -EBADMSG. */
int rtnl_parse_eswitch(const void *msg, size_t len, struct rtnl_eswitch *out);
/* "legacy", "switchdev", or NULL for an absent or unknown mode. */
const char *rtnl_eswitch_mode_to_string(int mode);

/* How links stack, from a link dump. */
struct rtnl_ifrel {
	int ifindex;
	int master;			/* bond or bridge it is enslaved to, 0 none */
	int link;			/* lower device (VLAN, macvlan), 0 none */
	char name[IF_NAMESIZE];
	char kind[16];
};

/* Whether the device `top` is the link `pf` or sits on it: a bond or bridge
 * it is enslaved to, a VLAN over it or over one of those, at any depth,
 * among rel[n]. */
bool rtnl_link_below(const struct rtnl_ifrel *rel, size_t n, int pf, int top);

#endif /* SRIOV_RTNL_H */
