/* SPDX-License-Identifier: MIT */
/* sriov: the worker operations: rtnetlink calls and sriov_numvfs writes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <linux/devlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "sriov.h"

#define NL_BUF_MIN (64 * 1024)

struct nl {
	int fd;
	bool sim;
	uint32_t seq;
	char *buf;
	size_t size;
};

/* Whether the sysfs root is the running kernel's /sys: a simulated tree's
 * interfaces are not the kernel's, so real rtnetlink must not be asked. */
static bool
sysfs_is_real(int sysfs_fd)
{
	struct stat a, b;

	return fstat(sysfs_fd, &a) == 0 && stat("/sys", &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* A netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_GENERIC); with the
 * test seam set, a connection to the simulated kernel's responder (which
 * tells generic netlink apart by its message types). */
static int
nl_open(struct nl *nl, int sysfs_fd, json_t *out, int protocol)
{
	const char *sim = getenv(SRIOV_NETLINK_ENV);
	struct timeval tv = { .tv_sec = 10 };

	if ((sim == NULL || sim[0] == '\0') && !sysfs_is_real(sysfs_fd)) {
		json_object_set_new(out, "error",
				    json_string("no netdev: the sysfs root is a simulated tree and no rtnetlink responder is set (" SRIOV_NETLINK_ENV ")"));
		return -ENODEV;
	}

	memset(nl, 0, sizeof(*nl));
	nl->fd = -1;
	nl->seq = (uint32_t)time(NULL);
	nl->size = NL_BUF_MIN;
	nl->buf = malloc(nl->size);
	if (nl->buf == NULL)
		return -ENOMEM;
	if (sim && sim[0]) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		nl->sim = true;
		if (strlen(sim) >= sizeof(sa.sun_path))
			goto out_einval;
		strcpy(sa.sun_path, sim);
		nl->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (nl->fd < 0 || connect(nl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto out_errno;
	} else {
		struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
		int one = 1;

		nl->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
		if (nl->fd < 0 || bind(nl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto out_errno;
		/* The kernel's reason in words, where it gives one. */
		setsockopt(nl->fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	}
	setsockopt(nl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return 0;
out_einval:
	errno = EINVAL;
out_errno:
	{
		int err = -errno;

		if (nl->fd >= 0)
			close(nl->fd);
		free(nl->buf);
		nl->buf = NULL;
		return err;
	}
}

static void
nl_close(struct nl *nl)
{
	if (nl->buf)
		close(nl->fd);
	free(nl->buf);
	nl->buf = NULL;
}

/* Sends one request and walks the answer into sink. Returns 0, the
 * kernel's -errno (ack gets its words), or a transport -errno. */
static int
nl_call(struct nl *nl, void *req, size_t len, const struct rtnl_sink *sink, char *ack,
	size_t acksize)
{
	struct nlmsghdr *nlh = req;
	ssize_t n;
	int ret;

	nlh->nlmsg_seq = ++nl->seq;
	if (nl->sim) {
		n = send(nl->fd, req, len, MSG_NOSIGNAL);
	} else {
		struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

		n = sendto(nl->fd, req, len, 0, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (n < 0)
		return -errno;
	if ((size_t)n != len)
		return -EIO;
	for (;;) {
		/* Size the buffer for the datagram first: VF lists are long. */
		n = recv(nl->fd, nl->buf, 1, MSG_PEEK | MSG_TRUNC);
		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (n == 0)
			return -ECONNRESET;
		if ((size_t)n > nl->size) {
			char *b = realloc(nl->buf, (size_t)n);

			if (b == NULL)
				return -ENOMEM;
			nl->buf = b;
			nl->size = (size_t)n;
		}
		n = recv(nl->fd, nl->buf, nl->size, 0);
		if (n < 0)
			return -errno;
		ret = rtnl_walk(nl->buf, (size_t)n, nl->seq, sink, ack, acksize);
		if (ret != 0)
			return ret < 0 ? ret : 0;
	}
}

/* --- VF JSON ------------------------------------------------------------ */

int
sriov_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	char end;

	if (s == NULL || strlen(s) != 17 ||
	    sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
		   &end) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++) {
		if (s[i * 3] == '+' || s[i * 3] == '-' || s[i * 3] == ' ')
			return -EINVAL;
		mac[i] = (uint8_t)b[i];
	}
	return 0;
}

static const char *const link_states[] = { "auto", "enable", "disable" };

static json_t *
opt_bool(int64_t v)
{
	return v < 0 ? json_null() : json_boolean(v != 0);
}

static json_t *
opt_int(int64_t v)
{
	return v < 0 ? json_null() : json_integer(v);
}

json_t *
sriov_vf_to_json(const struct rtnl_vf *vf)
{
	char mac[18];

	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", vf->mac[0], vf->mac[1],
		 vf->mac[2], vf->mac[3], vf->mac[4], vf->mac[5]);
	return json_pack("{s:I, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o}",
			 "index", (json_int_t)vf->index,
			 "mac", vf->has_mac ? json_string(mac) : json_null(),
			 "vlan", opt_int(vf->vlan), "qos", opt_int(vf->qos),
			 "vlan_proto", vf->vlan_proto == 0x88a8 ? "802.1ad" : "802.1Q",
			 "spoofchk", opt_bool(vf->spoofchk), "trust", opt_bool(vf->trust),
			 "min_tx_rate", opt_int(vf->min_tx_rate),
			 "max_tx_rate", opt_int(vf->max_tx_rate),
			 "link_state", vf->link_state >= 0 && vf->link_state <= 2 ?
				json_string(link_states[vf->link_state]) : opt_int(vf->link_state));
}

static int
num_field(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *v, char *why,
	  size_t whylen, int index)
{
	const json_t *x = json_object_get(o, key);

	if (x == NULL || json_is_null(x))
		return 0;
	if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi) {
		snprintf(why, whylen, "vfs[%d].%s: expected an integer from %lld to %lld", index,
			 key, (long long)lo, (long long)hi);
		return -EINVAL;
	}
	*v = json_integer_value(x);
	return 0;
}

static int
bool_field(const json_t *o, const char *key, int64_t *v, char *why, size_t whylen, int index)
{
	const json_t *x = json_object_get(o, key);

	if (x == NULL || json_is_null(x))
		return 0;
	if (!json_is_boolean(x)) {
		snprintf(why, whylen, "vfs[%d].%s: expected true or false", index, key);
		return -EINVAL;
	}
	*v = json_is_true(x);
	return 0;
}

int
sriov_vf_from_json(const json_t *o, struct rtnl_vf *vf, char *why, size_t whylen)
{
	static const char *const known[] = { "index", "mac", "vlan", "qos", "vlan_proto", "trust",
					     "spoofchk", "max_tx_rate", "min_tx_rate",
					     "link_state", NULL };
	const json_t *x;
	const char *key;
	int64_t idx = -1;
	json_t *v;

	memset(vf, 0, sizeof(*vf));
	vf->has_mac = true;
	vf->vlan_proto = 0x8100;
	vf->spoofchk = 1;
	if (!json_is_object(o)) {
		snprintf(why, whylen, "vfs: each entry must be an object with an \"index\"");
		return -EINVAL;
	}
	json_object_foreach((json_t *)o, key, v) {
		bool ok = false;

		for (size_t i = 0; known[i]; i++)
			ok |= strcmp(known[i], key) == 0;
		if (!ok) {
			snprintf(why, whylen, "vfs: unknown key \"%s\"", key);
			return -EINVAL;
		}
	}
	x = json_object_get(o, "index");
	if (!json_is_integer(x) || json_integer_value(x) < 0 ||
	    json_integer_value(x) >= RTNL_VF_MAX) {
		snprintf(why, whylen, "vfs: \"index\" must be an integer from 0 to %d", RTNL_VF_MAX - 1);
		return -EINVAL;
	}
	idx = json_integer_value(x);
	vf->index = (uint32_t)idx;
	x = json_object_get(o, "mac");
	if (x && !json_is_null(x)) {
		if (sriov_parse_mac(json_string_value(x), vf->mac) < 0) {
			snprintf(why, whylen, "vfs[%d].mac: expected six hex bytes aa:bb:cc:dd:ee:ff",
				 (int)idx);
			return -EINVAL;
		}
		if (vf->mac[0] & 1) {
			snprintf(why, whylen, "vfs[%d].mac: %s is a multicast address", (int)idx,
				 json_string_value(x));
			return -EINVAL;
		}
	}
	if (num_field(o, "vlan", 0, 4095, &vf->vlan, why, whylen, (int)idx) < 0 ||
	    num_field(o, "qos", 0, 7, &vf->qos, why, whylen, (int)idx) < 0 ||
	    num_field(o, "max_tx_rate", 0, UINT32_MAX - 1, &vf->max_tx_rate, why, whylen, (int)idx) < 0 ||
	    num_field(o, "min_tx_rate", 0, UINT32_MAX - 1, &vf->min_tx_rate, why, whylen, (int)idx) < 0 ||
	    bool_field(o, "trust", &vf->trust, why, whylen, (int)idx) < 0 ||
	    bool_field(o, "spoofchk", &vf->spoofchk, why, whylen, (int)idx) < 0)
		return -EINVAL;
	if (vf->qos > 0 && vf->vlan == 0) {
		snprintf(why, whylen, "vfs[%d].qos: a priority needs a vlan", (int)idx);
		return -EINVAL;
	}
	if (vf->max_tx_rate > 0 && vf->min_tx_rate > vf->max_tx_rate) {
		snprintf(why, whylen, "vfs[%d].min_tx_rate: above max_tx_rate", (int)idx);
		return -EINVAL;
	}
	x = json_object_get(o, "vlan_proto");
	if (x && !json_is_null(x)) {
		const char *p = json_string_value(x);

		if (p && (strcmp(p, "802.1Q") == 0 || strcmp(p, "802.1q") == 0))
			vf->vlan_proto = 0x8100;
		else if (p && (strcmp(p, "802.1ad") == 0 || strcmp(p, "802.1AD") == 0))
			vf->vlan_proto = 0x88a8;
		else {
			snprintf(why, whylen, "vfs[%d].vlan_proto: expected \"802.1Q\" or \"802.1ad\"",
				 (int)idx);
			return -EINVAL;
		}
	}
	x = json_object_get(o, "link_state");
	if (x && !json_is_null(x)) {
		const char *p = json_string_value(x);

		vf->link_state = -1;
		for (int i = 0; p && i < 3; i++)
			if (strcmp(p, link_states[i]) == 0)
				vf->link_state = i;
		if (vf->link_state < 0) {
			snprintf(why, whylen, "vfs[%d].link_state: expected \"auto\", \"enable\" or \"disable\"",
				 (int)idx);
			return -EINVAL;
		}
	}
	return 0;
}

/* --- inspect ---------------------------------------------------------------- */

struct rels {
	struct rtnl_ifrel *v;
	size_t n, cap;
	int defaults[32];
	size_t ndefaults;
};

static int
rel_link_cb(void *arg, const struct rtnl_link *l)
{
	struct rels *r = arg;

	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct rtnl_ifrel *v = realloc(r->v, cap * sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n] = (struct rtnl_ifrel){ .ifindex = l->ifindex, .master = l->master,
					  .link = l->link };
	memcpy(r->v[r->n].name, l->name, sizeof(r->v[r->n].name));
	memcpy(r->v[r->n].kind, l->kind, sizeof(r->v[r->n].kind));
	r->n++;
	return 0;
}

static int
rel_route_cb(void *arg, const struct rtnl_route *rt)
{
	struct rels *r = arg;

	for (size_t i = 0; rt->is_default && i < rt->noifs && r->ndefaults < 32; i++)
		r->defaults[r->ndefaults++] = rt->oifs[i];
	return 0;
}

struct one_link {
	struct rtnl_link *l;
};

static int
one_link_cb(void *arg, const struct rtnl_link *l)
{
	struct one_link *o = arg;

	memcpy(o->l, l, sizeof(*l));
	return 0;
}

static int
getlink(struct nl *nl, int ifindex, struct rtnl_link *out, char *ack, size_t acksize)
{
	char req[RTNL_REQ_SIZE];
	struct one_link o = { .l = out };
	struct rtnl_sink sink = { .link = one_link_cb, .arg = &o };
	size_t len = rtnl_req_getlink_vf(req, 0, ifindex);

	out->ifindex = 0;
	if (nl_call(nl, req, len, &sink, ack, acksize) < 0 && out->ifindex == 0)
		return -ENODEV;
	return out->ifindex == ifindex ? 0 : -ENODEV;
}

static json_t *
vfs_json(const struct rtnl_link *l)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < l->nvfs; i++)
		json_array_append_new(a, sriov_vf_to_json(&l->vfs[i]));
	return a;
}

static const char *
rel_name(const struct rels *r, int ifindex)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].ifindex == ifindex)
			return r->v[i].name;
	return "?";
}

/* devlink over generic netlink, opened at the first PF asked about. */
struct devlink {
	bool tried;
	int err;			/* < 0: no devlink for anyone (why) */
	uint16_t family;
	struct nl nl;
};

static int
family_cb(void *arg, const void *msg, size_t len)
{
	return rtnl_parse_genl_family(msg, len, arg);
}

static int
eswitch_cb(void *arg, const void *msg, size_t len)
{
	return rtnl_parse_eswitch(msg, len, arg);
}

static int
devlink_open(struct devlink *dl, int sysfs_fd)
{
	char req[RTNL_REQ_SIZE];
	struct rtnl_sink sink = { .msg = family_cb, .arg = &dl->family };
	json_t *why = json_object();
	int err;

	dl->tried = true;
	err = why ? nl_open(&dl->nl, sysfs_fd, why, NETLINK_GENERIC) : -ENOMEM;
	json_decref(why);
	if (err < 0)
		return dl->err = err;
	dl->family = 0;
	err = nl_call(&dl->nl, req, rtnl_req_genl_family(req, 0, DEVLINK_GENL_NAME), &sink, NULL, 0);
	if (err == 0 && dl->family == 0)
		err = -ENOENT;
	if (err < 0) {
		nl_close(&dl->nl);
		dl->err = err;
	}
	return err;
}

/* The PF's eswitch mode as devlink says: "legacy", "switchdev", or null when
 * its driver has none (no devlink family, no devlink instance: igb, no
 * eswitch: EOPNOTSUPP). Other failures are null as well, with *why set. */
static json_t *
eswitch_json(struct devlink *dl, int sysfs_fd, const char *addr, int *why)
{
	char req[RTNL_REQ_SIZE];
	struct rtnl_eswitch e = { .mode = -1 };
	struct rtnl_sink sink = { .msg = eswitch_cb, .arg = &e };
	const char *mode;
	int err;

	*why = 0;
	if (!dl->tried)
		devlink_open(dl, sysfs_fd);
	err = dl->err;
	if (err == 0)
		err = nl_call(&dl->nl, req, rtnl_req_eswitch_get(req, 0, dl->family, "pci", addr),
			      &sink, NULL, 0);
	if (err == 0 && (strcmp(e.dev, addr) != 0 || strcmp(e.bus, "pci") != 0))
		err = -EBADMSG;		/* an answer about another device */
	if (err < 0) {
		if (err != -ENOENT && err != -ENODEV && err != -EOPNOTSUPP)
			*why = err;
		/* A transport failure: the next PF would wait for it again. */
		if (err == -ETIMEDOUT || err == -ECONNRESET) {
			nl_close(&dl->nl);
			dl->err = err;
		}
		return json_null();
	}
	mode = rtnl_eswitch_mode_to_string(e.mode);
	return mode ? json_string(mode) : json_null();
}

int
sriov_op_inspect(int sysfs_fd, const json_t *args, json_t *out)
{
	const json_t *pfs = json_object_get(args, "pfs"), *pf;
	struct rels rels = { 0 };
	char req[RTNL_REQ_SIZE], ack[256];
	struct rtnl_sink sink = { .link = rel_link_cb, .route = rel_route_cb, .arg = &rels };
	struct rtnl_link *l;
	json_t *res = json_object();
	bool want_eswitch = json_is_true(json_object_get(args, "eswitch"));
	struct devlink dl = { 0 };
	struct nl nl;
	size_t i;
	int err;

	if (res == NULL)
		return -ENOMEM;
	json_object_set_new(out, "pfs", res);
	err = nl_open(&nl, sysfs_fd, out, NETLINK_ROUTE);
	if (err < 0) {
		if (json_object_get(out, "error") == NULL)
			json_object_set_new(out, "error", json_sprintf("rtnetlink: %s", strerror(-err)));
		return err;
	}
	l = malloc(sizeof(*l));
	err = l ? nl_call(&nl, req, rtnl_req_dumplinks(req, 0), &sink, ack, sizeof(ack)) : -ENOMEM;
	if (err == 0)
		err = nl_call(&nl, req, rtnl_req_dumproutes(req, 0, AF_INET), &sink, ack, sizeof(ack));
	if (err == 0)
		err = nl_call(&nl, req, rtnl_req_dumproutes(req, 0, AF_INET6), &sink, ack, sizeof(ack));
	if (err < 0) {
		json_object_set_new(out, "error", json_sprintf("rtnetlink dump: %s", strerror(-err)));
		goto out;
	}
	json_array_foreach(pfs, i, pf) {
		const char *addr = json_string_value(json_object_get(pf, "address"));
		int ifindex = (int)json_integer_value(json_object_get(pf, "ifindex"));
		json_t *o;
		const char *via = NULL;

		if (addr == NULL || ifindex <= 0)
			continue;
		o = json_object();
		json_object_set_new(res, addr, o);
		for (size_t k = 0; k < rels.ndefaults && !via; k++)
			if (rtnl_link_below(rels.v, rels.n, ifindex, rels.defaults[k]))
				via = rel_name(&rels, rels.defaults[k]);
		json_object_set_new(o, "management", json_boolean(via != NULL));
		if (via)
			json_object_set_new(o, "via", json_string(via));
		if (want_eswitch) {
			int why;

			json_object_set_new(o, "eswitch", eswitch_json(&dl, sysfs_fd, addr, &why));
			if (why < 0)
				json_object_set_new(o, "eswitch_error",
						    json_sprintf("devlink: %s", strerror(-why)));
		}
		if (getlink(&nl, ifindex, l, ack, sizeof(ack)) < 0) {
			json_object_set_new(o, "error", json_sprintf("no link with ifindex %d", ifindex));
			continue;
		}
		json_object_set_new(o, "name", json_string(l->name));
		json_object_set_new(o, "num_vf", json_integer(l->num_vf));
		json_object_set_new(o, "vf_info", json_boolean(l->has_vfinfo));
		json_object_set_new(o, "operstate", json_integer(l->operstate));
		json_object_set_new(o, "up", json_boolean(l->flags & 1));
		json_object_set_new(o, "vfs", vfs_json(l));
	}
	err = 0;
out:
	free(l);
	free(rels.v);
	nl_close(&nl);
	if (dl.tried && dl.err == 0)
		nl_close(&dl.nl);
	return err;
}

/* --- setvfs ------------------------------------------------------------------ */

static const struct rtnl_vf *
vf_by_index(const struct rtnl_link *l, uint32_t index)
{
	for (size_t i = 0; i < l->nvfs; i++)
		if (l->vfs[i].index == index)
			return &l->vfs[i];
	return NULL;
}

struct applied {
	uint32_t index;
	enum rtnl_vf_attr attr;
};

static int
setvf(struct nl *nl, int ifindex, enum rtnl_vf_attr a, const struct rtnl_vf *vf, char *ack,
      size_t acksize)
{
	char req[RTNL_REQ_SIZE];

	return nl_call(nl, req, rtnl_req_setvf(req, 0, ifindex, a, vf), NULL, ack, acksize);
}

/* A value of `before` that can be written back (unreported ones cannot). */
static bool
restorable(enum rtnl_vf_attr a, const struct rtnl_vf *b)
{
	switch (a) {
	case RTNL_VF_MAC: return b->has_mac;
	case RTNL_VF_VLAN: return b->vlan >= 0 && b->qos >= 0;
	case RTNL_VF_RATE: return b->max_tx_rate >= 0 && b->min_tx_rate >= 0;
	case RTNL_VF_SPOOFCHK: return b->spoofchk >= 0;
	case RTNL_VF_LINK_STATE: return b->link_state >= 0;
	case RTNL_VF_TRUST: return b->trust >= 0;
	default: return false;
	}
}

static int
rollback(struct nl *nl, int ifindex, const struct rtnl_link *before, const struct applied *ap,
	 size_t n)
{
	char ack[256];
	int worst = 0;

	while (n-- > 0) {
		const struct rtnl_vf *b = vf_by_index(before, ap[n].index);
		int err;

		if (b == NULL || !restorable(ap[n].attr, b))
			continue;
		err = setvf(nl, ifindex, ap[n].attr, b, ack, sizeof(ack));
		if (err < 0)
			worst = err;
	}
	return worst;
}

int
sriov_op_setvfs(int sysfs_fd, const json_t *args, json_t *out)
{
	int ifindex = (int)json_integer_value(json_object_get(args, "ifindex"));
	const json_t *vfs = json_object_get(args, "vfs"), *v;
	struct rtnl_link *before = NULL, *after = NULL;
	struct rtnl_vf *want = NULL;
	struct applied *ap = NULL;
	size_t nwant = json_array_size(vfs), nap = 0, i;
	char why[256], ack[256] = "";
	struct nl nl;
	int err;

	err = nl_open(&nl, sysfs_fd, out, NETLINK_ROUTE);
	if (err < 0) {
		if (json_object_get(out, "error") == NULL)
			json_object_set_new(out, "error", json_sprintf("rtnetlink: %s", strerror(-err)));
		return err;
	}
	before = malloc(sizeof(*before));
	after = malloc(sizeof(*after));
	want = calloc(nwant + 1, sizeof(*want));
	ap = calloc(nwant * RTNL_VF_ATTR_MAX + 1, sizeof(*ap));
	if (!before || !after || !want || !ap) {
		err = -ENOMEM;
		goto out;
	}
	json_array_foreach(vfs, i, v) {
		if (sriov_vf_from_json(v, &want[i], why, sizeof(why)) < 0) {
			json_object_set_new(out, "error", json_string(why));
			err = -EINVAL;
			goto out;
		}
	}
	err = getlink(&nl, ifindex, before, ack, sizeof(ack));
	if (err < 0) {
		json_object_set_new(out, "error", json_sprintf("no link with ifindex %d", ifindex));
		goto out;
	}
	for (i = 0; i < nwant; i++) {
		const struct rtnl_vf *have = vf_by_index(before, want[i].index);

		if (have == NULL) {
			json_object_set_new(out, "error",
					    json_sprintf(before->has_vfinfo ?
							 "VF %u: the PF reports no such VF (%d VFs)" :
							 "VF %u: the PF's driver reports no VF settings (%d VFs)",
							 want[i].index, before->num_vf));
			json_object_set_new(out, "vf", json_integer(want[i].index));
			err = -ENODEV;
			goto out;
		}
		for (int a = 0; a < RTNL_VF_ATTR_MAX; a++) {
			if (rtnl_vf_attr_equal(a, &want[i], have))
				continue;
			err = setvf(&nl, ifindex, a, &want[i], ack, sizeof(ack));
			if (err < 0) {
				json_object_set_new(out, "error",
						    json_sprintf("VF %u %s: %s%s%s", want[i].index,
								 rtnl_vf_attr_to_string(a), strerror(-err),
								 ack[0] ? ": " : "", ack));
				json_object_set_new(out, "vf", json_integer(want[i].index));
				json_object_set_new(out, "attribute",
						    json_string(rtnl_vf_attr_to_string(a)));
				goto out_rollback;
			}
			ap[nap++] = (struct applied){ want[i].index, a };
		}
	}
	/* Read back: the kernel may take a write and keep another value. */
	err = getlink(&nl, ifindex, after, ack, sizeof(ack));
	if (err < 0) {
		json_object_set_new(out, "error", json_string("the PF went away during the change"));
		goto out_rollback;
	}
	for (i = 0; i < nwant; i++) {
		const struct rtnl_vf *have = vf_by_index(after, want[i].index);

		for (int a = 0; have && a < RTNL_VF_ATTR_MAX; a++) {
			if (rtnl_vf_attr_equal(a, &want[i], have))
				continue;
			json_object_set_new(out, "error",
					    json_sprintf("VF %u %s: the kernel took the write but reports another value",
							 want[i].index, rtnl_vf_attr_to_string(a)));
			json_object_set_new(out, "vf", json_integer(want[i].index));
			json_object_set_new(out, "attribute", json_string(rtnl_vf_attr_to_string(a)));
			err = -EIO;
			goto out_rollback;
		}
	}
	json_object_set_new(out, "vfs", vfs_json(after));
	err = 0;
	goto out;
out_rollback:
	if (rollback(&nl, ifindex, before, ap, nap) < 0)
		json_object_set_new(out, "rollback", json_string("incomplete"));
	if (getlink(&nl, ifindex, after, ack, sizeof(ack)) == 0)
		json_object_set_new(out, "vfs", vfs_json(after));
out:
	free(before);
	free(after);
	free(want);
	free(ap);
	nl_close(&nl);
	return err;
}

/* --- numvfs ------------------------------------------------------------------ */

static int
read_int_at(int dirfd, const char *path, int *v)
{
	char buf[32];
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -ENODATA;
	buf[n] = '\0';
	*v = atoi(buf);
	return 0;
}

static int
write_at(int dirfd, const char *path, int v)
{
	char buf[16];
	int fd = openat(dirfd, path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	int len = snprintf(buf, sizeof(buf), "%d\n", v), err = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, buf, (size_t)len) != len)
		err = -errno ? -errno : -EIO;
	if (close(fd) < 0 && err == 0)
		err = -errno;
	return err;
}

static int
count_virtfn(int dirfd, const char *pfdir)
{
	int fd = openat(dirfd, pfdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int n = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(d)) != NULL)
		n += strncmp(de->d_name, "virtfn", 6) == 0;
	closedir(d);
	return n;
}

static long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int
sriov_op_numvfs(int sysfs_fd, const json_t *args, json_t *out)
{
	const char *pf = json_string_value(json_object_get(args, "pf"));
	int num = (int)json_integer_value(json_object_get(args, "num"));
	long wait_ms = (long)json_integer_value(json_object_get(args, "wait_ms"));
	char dir[128], path[160];
	int cur = -1, err;
	long t0 = mono_ms();

	if (pf == NULL || strchr(pf, '/') || strlen(pf) > 32 || num < 0)
		return -EINVAL;
	snprintf(dir, sizeof(dir), "bus/pci/devices/%s", pf);
	snprintf(path, sizeof(path), "%s/sriov_numvfs", dir);
	err = read_int_at(sysfs_fd, path, &cur);
	if (err < 0) {
		json_object_set_new(out, "error", json_sprintf("%s: %s", path, strerror(-err)));
		return err;
	}
	if (cur != num) {
		/* The kernel refuses non-zero to non-zero (EBUSY): through 0. */
		if (cur != 0 && num != 0 && (err = write_at(sysfs_fd, path, 0)) < 0) {
			json_object_set_new(out, "error", json_sprintf("writing 0 to sriov_numvfs: %s",
								       strerror(-err)));
			return err;
		}
		err = write_at(sysfs_fd, path, num);
		if (err < 0) {
			json_object_set_new(out, "error", json_sprintf("writing %d to sriov_numvfs: %s", num,
								       strerror(-err)));
			return err;
		}
	}
	/* The VFs are there when the write returns on a real kernel; a
	 * simulated one creates them a little later. */
	for (;;) {
		int n = count_virtfn(sysfs_fd, dir);

		if (n == num && read_int_at(sysfs_fd, path, &cur) == 0 && cur == num)
			break;
		if (mono_ms() - t0 >= wait_ms) {
			json_object_set_new(out, "error",
					    json_sprintf("sriov_numvfs reads %d with %d VFs present after writing %d",
							 cur, n < 0 ? 0 : n, num));
			return -ETIMEDOUT;
		}
		{
			struct timespec ts = { 0, 20 * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	json_object_set_new(out, "numvfs", json_integer(cur));
	return 0;
}
