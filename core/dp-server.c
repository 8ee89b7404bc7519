/* SPDX-License-Identifier: MIT */
/* The kubelet side on libevent: endpoint sockets, Register, inotify, streams. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "dp-server.h"
#include "dp.h"
#include "grpc.h"
#include "log.h"

#define KUBELET_SOCK "kubelet.sock"
#define OUTPUT_HIGH (1024 * 1024)	/* stop generating frames above this */
#define FLUSH_BUDGET (256 * 1024)
#define REGISTER_TIMEOUT_S 15
#define DIR_POLL_S 1
#define MAX_CONNS 32			/* server connections on one endpoint */
#define IDLE_MS (60 * 1000)		/* a connection with no stream this long is closed */
#define HANDSHAKE_MS (5 * 1000)		/* the client's preface and SETTINGS within this */
#define REQUEST_MS (30 * 1000)		/* a request's body within this */
#define INPUT_BUDGET (16 * 1024 * 1024)	/* request bytes buffered, all endpoints */
#define REREGISTER_MIN_MS 1000		/* between Registers not due to a failure */
#define REFUSAL_SUMMARY_MS (60 * 1000)

/* Register retries: quick at first (a kubelet just started may refuse
 * once), then backing off. */
static const int backoff_ms[] = { 50, 100, 200, 1000, 2000, 5000, 10000 };
#define BACKOFF_STEPS ((int)(sizeof(backoff_ms) / sizeof(backoff_ms[0])))

struct dp_conn {
	struct dp_server *srv;
	struct bufferevent *bev;
	struct grpc_conn *g;
	struct dp_resource *r;
	struct dp_endpoint *reg_ep;	/* client: the endpoint registering */
	struct dp_endpoint *ep;		/* server: the endpoint it came in on */
	unsigned gen;			/* server: the endpoint's Register count at accept */
	int64_t born_ms, idle_since_ms, closing_ms;
	bool client;
	bool dead;			/* free at the next safe point */
	bool in_callback;
	struct dp_conn *next, *prev;
};

struct dp_endpoint {
	struct dp_server *srv;
	struct dp_resource *r;
	struct evconnlistener *listener;
	dev_t dev;
	ino_t ino;
	bool have_file;
	struct dp_conn *reg;
	struct event *timer;		/* Register timeout or retry */
	struct event *soon;		/* a Register held back by the rate limit */
	unsigned reg_gen;		/* Registers sent */
	int64_t last_register_ms;
	int failures;			/* Register failures in a row */
	bool refusing;			/* at the connection limit */
	int64_t refusing_since_ms;
	uint64_t refused_unlogged;
};

struct dp_server {
	struct dp *dp;			/* the resources this server serves */
	struct bus *bus;		/* resource.registered / resource.removed */
	char *kubelet_dir, *dev_root;
	struct event_base *base;
	int dirfd, cwdfd;
	int ifd;
	int dir_wd, vfio_wd;		/* the kubelet directory, <dev-root>/vfio */
	struct event *iev;
	struct event *kick_ev;
	struct event *dir_poll;
	struct event *sweep_ev;		/* connection deadlines */
	struct event *aer_ev;		/* an AER hold ends */
	struct dp_conn *conns;
	struct grpc_budget budget;
	int idle_ms, handshake_ms, request_ms;
	bool stopping;
};

static void conn_flush(struct dp_conn *c);
static void endpoint_register(struct dp_endpoint *ep);
static void endpoint_register_soon(struct dp_endpoint *ep, const char *why);
static int endpoint_listen(struct dp_endpoint *ep);

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval
tv_ms(int64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };

	return tv;
}

/* --- connections -------------------------------------------------------- */

static void
conn_free(struct dp_conn *c)
{
	struct dp_server *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->reg_ep && c->reg_ep->reg == c)
		c->reg_ep->reg = NULL;
	if (c->ep)
		c->ep->r->connections--;
	c->in_callback = true;		/* grpc_conn_free calls back */
	grpc_conn_free(c->g);
	bufferevent_free(c->bev);
	free(c);
}

/* Frees a connection marked dead, unless one of its callbacks is running. */
static void
conn_reap(struct dp_conn *c)
{
	if (c->dead && !c->in_callback)
		conn_free(c);
}

static void
g_write(void *arg, const uint8_t *data, size_t len)
{
	struct dp_conn *c = arg;

	evbuffer_add(bufferevent_get_output(c->bev), data, len);
}

static void
g_request(void *arg, struct grpc_call *call, const char *path, const uint8_t *msg, size_t len)
{
	struct dp_conn *c = arg;
	struct dp_resource *r = c->r;
	struct dp_endpoint *ep = c->ep;

	dp_handle(c->srv->dp, r, call, path, msg, len);
	if (r == NULL || ep == NULL || ep->reg_gen == 0 || !dp_is_watch(r, call))
		return;
	/* The current registration's stream: the first ListAndWatch on a
	 * connection the kubelet opened after our Register, else the first
	 * one after our Register (a kubelet may reuse a connection). Others
	 * (extra watchers, a replaced registration's) may come and go without
	 * consequence. */
	if (c->gen == ep->reg_gen && !r->reg_watch_new_conn) {
		r->reg_watch = call;
		r->reg_watch_new_conn = true;
	} else if (r->reg_watch == NULL) {
		r->reg_watch = call;
		r->reg_watch_new_conn = false;
	} else {
		return;
	}
	log_debug("dp", "%s: ListAndWatch stream of registration %u%s", r->name, ep->reg_gen,
		  r->reg_watch_new_conn ? "" : " (on an older connection)");
}

static void
g_call_closed(void *arg, struct grpc_call *call)
{
	struct dp_conn *c = arg;
	struct dp_server *s = c->srv;

	if (s->stopping || c->r == NULL)
		return;
	/* The kubelet never reopens ListAndWatch itself: register again when
	 * its stream for the current registration ends. */
	if (dp_call_closed(s->dp, c->r, call) && c->r->ep) {
		c->r->backoff_step = 0;
		endpoint_register_soon(c->r->ep, "the registration's ListAndWatch stream ended");
	}
}

static bool
g_known_path(void *arg, const char *path)
{
	return dp_known_path(path);
}

static void
endpoint_backoff(struct dp_endpoint *ep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
g_response(void *arg, struct grpc_call *call, int status, const char *message, const uint8_t *msg,
	   size_t len)
{
	struct dp_conn *c = arg;
	struct dp_endpoint *ep = c->reg_ep;
	struct dp_resource *r;

	c->dead = true;
	if (ep == NULL || ep->reg != c)
		return;
	ep->reg = NULL;
	r = ep->r;
	evtimer_del(ep->timer);
	if (status != GRPC_STATUS_OK) {
		endpoint_backoff(ep, "Register refused: %s%s%s", grpc_status_to_string(status),
				 message ? ": " : "", message ? message : "");
		return;
	}
	dp_reg_set_state(r, DP_REG_REGISTERED, "the kubelet answered Register");
	r->registrations++;
	r->registered_at = (int64_t)time(NULL);
	r->backoff_step = 0;
	r->last_error[0] = '\0';
	if (ep->failures > 0)
		log_info("dp", "%s: registered with the kubelet after %d failed attempts", r->name,
			 ep->failures);
	else
		log_info("dp", "%s: registered with the kubelet", r->name);
	ep->failures = 0;
	bus_publish(c->srv->bus, NULL, "resource.registered", json_pack("{s:s}", "resource", r->name));
}

static const struct grpc_conn_ops server_ops = {
	.write = g_write,
	.request = g_request,
	.call_closed = g_call_closed,
	.known_path = g_known_path,
};

static const struct grpc_conn_ops client_ops = {
	.write = g_write,
	.response = g_response,
};

/* Moves frames into the socket buffer while it is below the mark; the write
 * callback comes back for the rest. */
static void
conn_flush(struct dp_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (c->dead)
		return;
	while (evbuffer_get_length(out) < OUTPUT_HIGH)
		if (!grpc_conn_flush(c->g, FLUSH_BUDGET))
			break;
	if (grpc_conn_done(c->g) && evbuffer_get_length(out) == 0)
		c->dead = true;
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct dp_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	uint8_t buf[16384];

	c->in_callback = true;
	while (!c->dead && evbuffer_get_length(in) > 0) {
		int n = evbuffer_remove(in, buf, sizeof(buf));

		if (n <= 0)
			break;
		if (grpc_conn_recv(c->g, buf, (size_t)n) < 0) {
			log_debug("dp", "%s: HTTP/2 protocol error from the peer; closing",
				  c->r ? c->r->name : "connection");
			evbuffer_drain(in, evbuffer_get_length(in));
			break;
		}
	}
	if (!c->client && grpc_conn_open_calls(c->g) > 0)
		c->idle_since_ms = now_ms();
	conn_flush(c);
	c->in_callback = false;
	conn_reap(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct dp_conn *c = arg;

	c->in_callback = true;
	conn_flush(c);
	c->in_callback = false;
	conn_reap(c);
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct dp_conn *c = arg;
	struct dp_endpoint *ep = c->reg_ep;

	if (c->client && ep && ep->reg == c) {
		ep->reg = NULL;
		endpoint_backoff(ep, "the kubelet closed the Register connection");
	}
	c->dead = true;
	if (!c->in_callback)
		conn_free(c);
}

static struct dp_conn *
conn_new(struct dp_server *s, int fd, bool client, struct dp_resource *r)
{
	struct dp_conn *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		close(fd);
		return NULL;
	}
	c->srv = s;
	c->client = client;
	c->r = r;
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		free(c);
		return NULL;
	}
	if ((client ? grpc_conn_new_client(&client_ops, c, &c->g)
		    : grpc_conn_new_server(&server_ops, c, &c->g)) < 0) {
		bufferevent_free(c->bev);
		free(c);
		return NULL;
	}
	if (!client)
		grpc_conn_set_budget(c->g, &s->budget);
	c->born_ms = c->idle_since_ms = now_ms();
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	return c;
}

/* Ends a server connection now: GOAWAY and what is queued go out if the
 * socket takes them, then it is freed. */
static void conn_drain_now(struct dp_conn *c);

static void
conn_close_now(struct dp_conn *c)
{
	conn_drain_now(c);
	c->dead = true;
	conn_reap(c);
}

static void
sweep_arm(struct dp_server *s)
{
	int period = s->idle_ms;
	struct timeval tv;

	if (s->handshake_ms < period)
		period = s->handshake_ms;
	if (s->request_ms < period)
		period = s->request_ms;
	period /= 4;
	period = period < 20 ? 20 : period > 1000 ? 1000 : period;
	tv = tv_ms(period);
	if (!evtimer_pending(s->sweep_ev, NULL))
		evtimer_add(s->sweep_ev, &tv);
}

/* At the limit, a connection that serves no one makes room: the oldest
 * that never finished its handshake, else the oldest with no stream. */
static bool
endpoint_evict(struct dp_endpoint *ep)
{
	struct dp_conn *half = NULL, *idle = NULL;

	for (struct dp_conn *c = ep->srv->conns; c; c = c->next) {
		if (c->ep != ep || c->dead || c->in_callback)
			continue;
		if (!grpc_conn_established(c->g)) {
			if (half == NULL || c->born_ms <= half->born_ms)
				half = c;
		} else if (grpc_conn_open_calls(c->g) == 0) {
			if (idle == NULL || c->idle_since_ms <= idle->idle_since_ms)
				idle = c;
		}
	}
	if (half == NULL && idle == NULL)
		return false;
	log_debug("dp", "%s: closing a connection %s to make room", ep->r->name,
		  half ? "that never finished its handshake" : "with no stream");
	conn_close_now(half ? half : idle);
	return true;
}

/* Over the limit: the peer gets our SETTINGS and GOAWAY(ENHANCE_YOUR_CALM)
 * then the end of the connection. Logged once, then counted. */
static void
endpoint_refuse(struct dp_endpoint *ep, int fd)
{
	static const uint8_t refusal[] = {
		0, 0, 0, 0x4, 0, 0, 0, 0, 0,			/* SETTINGS */
		0, 0, 28, 0x7, 0, 0, 0, 0, 0,			/* GOAWAY */
		0, 0, 0, 0, 0, 0, 0, 0x0b,			/* stream 0, ENHANCE_YOUR_CALM */
		't', 'o', 'o', ' ', 'm', 'a', 'n', 'y', ' ', 'c', 'o', 'n', 'n', 'e', 'c', 't',
		'i', 'o', 'n', 's',
	};
	struct dp_resource *r = ep->r;
	uint8_t junk[4096];
	ssize_t n = send(fd, refusal, sizeof(refusal), MSG_DONTWAIT | MSG_NOSIGNAL);

	/* What the peer sent already is read (a little of it), so that the
	 * close is an end of stream after our GOAWAY rather than a reset. */
	for (int i = 0; i < 16 && n >= 0; i++)
		if ((n = recv(fd, junk, sizeof(junk), MSG_DONTWAIT)) <= 0)
			break;
	close(fd);
	r->refused_connections++;
	if (ep->refusing) {
		ep->refused_unlogged++;
		return;
	}
	ep->refusing = true;
	ep->refusing_since_ms = now_ms();
	log_warnx("dp", "%s: %d connections with open streams, the most one endpoint takes; "
			"refusing new ones (a summary follows)", r->name, r->connections);
}

static void
endpoint_refusal_summary(struct dp_endpoint *ep, bool over)
{
	if (ep->refused_unlogged > 0)
		log_warnx("dp", "%s: %" PRIu64 " more connections refused%s", ep->r->name,
			  ep->refused_unlogged, over ? "; accepting again" : " in the last minute");
	else if (over)
		log_info("dp", "%s: accepting connections again", ep->r->name);
	ep->refused_unlogged = 0;
	ep->refusing_since_ms = now_ms();
	ep->refusing = !over;
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen,
	  void *arg)
{
	struct dp_endpoint *ep = arg;
	struct dp_conn *c;

	if (ep->r->connections >= MAX_CONNS && !endpoint_evict(ep)) {
		endpoint_refuse(ep, fd);
		return;
	}
	if (ep->refusing)
		endpoint_refusal_summary(ep, true);
	c = conn_new(ep->srv, fd, false, ep->r);
	if (c == NULL)
		return;
	c->ep = ep;
	c->gen = ep->reg_gen;
	ep->r->connections++;
	sweep_arm(ep->srv);
	log_debug("dp", "%s: connection on %s", ep->r->name, ep->r->sock);
	conn_flush(c);		/* the server preface: our SETTINGS first */
}

static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct dp_endpoint *ep = arg;

	log_warnx("dp", "%s: accept: %s", ep->r->name,
		  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* --- endpoints ------------------------------------------------------------- */

static void
endpoint_backoff(struct dp_endpoint *ep, const char *fmt, ...)
{
	struct dp_resource *r = ep->r;
	int step = r->backoff_step < BACKOFF_STEPS ? r->backoff_step : BACKOFF_STEPS - 1;
	int ms = backoff_ms[step];
	struct timeval tv = tv_ms(ms);
	char before[sizeof(r->last_error)], when[32];
	va_list ap;

	snprintf(before, sizeof(before), "%s", r->last_error);
	va_start(ap, fmt);
	vsnprintf(r->last_error, sizeof(r->last_error), fmt, ap);
	va_end(ap);
	if (ep->srv->stopping)
		return;
	if (ep->reg) {
		/* A Register still in flight must not be taken for a success
		 * now that something failed (our socket, say): it is dropped. */
		ep->reg->reg_ep = NULL;
		ep->reg->dead = true;
		conn_reap(ep->reg);
		ep->reg = NULL;
	}
	if (r->backoff_step < BACKOFF_STEPS - 1)
		r->backoff_step++;
	if (r->state != DP_REG_FAILED)
		dp_reg_set_state(r, DP_REG_BACKOFF, "Register failed");
	if (ms < 1000)
		snprintf(when, sizeof(when), "%d ms", ms);
	else
		snprintf(when, sizeof(when), "%d s", ms / 1000);
	/* The same complaint again is not news: debug until it changes. */
	if (ep->failures++ == 0 || strcmp(before, r->last_error) != 0)
		log_warnx("dp", "%s: %s; retrying in %s", r->name, r->last_error, when);
	else
		log_debug("dp", "%s: %s (failure %d); retrying in %s", r->name, r->last_error,
			  ep->failures, when);
	evtimer_del(ep->timer);
	evtimer_add(ep->timer, &tv);
}

static bool
kubelet_present(struct dp_server *s)
{
	struct stat st;

	return s->dirfd >= 0 && fstatat(s->dirfd, KUBELET_SOCK, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISSOCK(st.st_mode);
}

/* connect/bind on a name inside the kubelet directory we hold open: the
 * path cannot be redirected by a symlinked parent, and sun_path stays short. */
static int
at_dir(struct dp_server *s, int fd, const char *name, bool do_bind)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int rv, err = 0;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", name);
	if (fchdir(s->dirfd) < 0)
		return -errno;
	if (do_bind) {
		mode_t old = umask(0177);

		rv = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
	} else {
		rv = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	}
	if (rv < 0)
		err = -errno;
	if (fchdir(s->cwdfd) < 0)
		log_warn("dp", "cannot return to the working directory");
	return err;
}

static void
endpoint_register(struct dp_endpoint *ep)
{
	struct dp_server *s = ep->srv;
	struct dp_resource *r = ep->r;
	struct timeval tv = { REGISTER_TIMEOUT_S, 0 };
	uint8_t *msg = NULL;
	size_t len;
	int fd, err;

	if (s->stopping || r->state == DP_REG_FAILED)
		return;
	evtimer_del(ep->timer);
	evtimer_del(ep->soon);
	if (ep->reg) {
		ep->reg->reg_ep = NULL;
		ep->reg->dead = true;
		conn_reap(ep->reg);
		ep->reg = NULL;
	}
	if (!ep->have_file && endpoint_listen(ep) < 0)
		return;
	if (!kubelet_present(s)) {
		dp_reg_set_state(r, DP_REG_WAIT_KUBELET, "no kubelet socket");
		log_info("dp", "%s: serving %s; waiting for the kubelet", r->name, r->sock);
		return;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		endpoint_backoff(ep, "socket: %s", strerror(errno));
		return;
	}
	err = at_dir(s, fd, KUBELET_SOCK, false);
	if (err < 0 && err != -EINPROGRESS) {
		close(fd);
		endpoint_backoff(ep, "cannot connect to %s: %s", KUBELET_SOCK, strerror(-err));
		return;
	}
	ep->reg = conn_new(s, fd, true, r);
	if (ep->reg == NULL) {
		endpoint_backoff(ep, "out of memory");
		return;
	}
	ep->reg->reg_ep = ep;
	if (dp_encode_register(r, &msg, &len) < 0 ||
	    grpc_conn_call(ep->reg->g, DP_REGISTER_PATH, msg, len) == NULL) {
		free(msg);
		ep->reg->dead = true;
		conn_reap(ep->reg);
		ep->reg = NULL;
		endpoint_backoff(ep, "cannot build the Register request");
		return;
	}
	free(msg);
	dp_reg_set_state(r, DP_REG_REGISTERING, "Register sent");
	/* A new registration: the old one's stream no longer counts, and
	 * connections from now on are the new one's. */
	ep->reg_gen++;
	ep->last_register_ms = now_ms();
	r->register_attempts++;
	r->reg_watch = NULL;
	r->reg_watch_new_conn = false;
	conn_flush(ep->reg);
	evtimer_add(ep->timer, &tv);
	log_debug("dp", "%s: Register %u sent", r->name, ep->reg_gen);
}

/* Registers again, but not more often than once a second whatever asks
 * for it (failures have their own backoff). */
static void
endpoint_register_soon(struct dp_endpoint *ep, const char *why)
{
	int64_t wait = ep->last_register_ms + REREGISTER_MIN_MS - now_ms();
	struct timeval tv;

	if (ep->last_register_ms == 0 || wait <= 0) {
		log_info("dp", "%s: %s; registering again", ep->r->name, why);
		endpoint_register(ep);
		return;
	}
	if (evtimer_pending(ep->soon, NULL))
		return;
	log_info("dp", "%s: %s; registering again in %d ms (at most once a second)", ep->r->name,
		 why, (int)wait);
	tv = tv_ms(wait);
	evtimer_add(ep->soon, &tv);
}

static void
endpoint_soon_cb(evutil_socket_t fd, short what, void *arg)
{
	endpoint_register(arg);
}

static void
endpoint_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_endpoint *ep = arg;

	if (ep->r->state == DP_REG_REGISTERING) {
		if (ep->reg) {
			ep->reg->reg_ep = NULL;
			ep->reg->dead = true;
			conn_reap(ep->reg);
			ep->reg = NULL;
		}
		endpoint_backoff(ep, "Register timed out after %d s", REGISTER_TIMEOUT_S);
		return;
	}
	endpoint_register(ep);
}

/* Removes our socket file, and only ours: same device and inode as made. */
static void
endpoint_unlink(struct dp_endpoint *ep)
{
	struct dp_server *s = ep->srv;
	struct stat st;

	if (!ep->have_file || s->dirfd < 0)
		return;
	ep->have_file = false;
	if (fstatat(s->dirfd, ep->r->sock, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == ep->dev &&
	    st.st_ino == ep->ino)
		unlinkat(s->dirfd, ep->r->sock, 0);
}

static int
endpoint_listen(struct dp_endpoint *ep)
{
	struct dp_server *s = ep->srv;
	struct dp_resource *r = ep->r;
	struct stat st;
	int fd, err;

	if (s->dirfd < 0) {
		snprintf(r->last_error, sizeof(r->last_error), "no kubelet directory %s",
			 s->kubelet_dir);
		dp_reg_set_state(r, DP_REG_WAIT_KUBELET, "no kubelet directory");
		return -ENOENT;
	}
	if (ep->listener) {
		evconnlistener_free(ep->listener);
		ep->listener = NULL;
	}
	if (fstatat(s->dirfd, r->sock, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			endpoint_backoff(ep, "%s exists and is not a socket; not touching it", r->sock);
			return -EEXIST;
		}
		/* A socket under our name: a previous run's, unless someone answers. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		err = fd >= 0 ? at_dir(s, fd, r->sock, false) : -errno;
		if (fd >= 0)
			close(fd);
		if (err == 0 || err == -EAGAIN) {
			endpoint_backoff(ep, "%s is in use by another process", r->sock);
			return -EADDRINUSE;
		}
		unlinkat(s->dirfd, r->sock, 0);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		endpoint_backoff(ep, "socket: %s", strerror(errno));
		return -errno;
	}
	err = at_dir(s, fd, r->sock, true);
	if (err == 0 && listen(fd, 64) < 0)
		err = -errno;
	if (err == 0 && fstatat(s->dirfd, r->sock, &st, AT_SYMLINK_NOFOLLOW) < 0)
		err = -errno;
	if (err < 0) {
		close(fd);
		endpoint_backoff(ep, "cannot listen on %s: %s", r->sock, strerror(-err));
		return err;
	}
	ep->dev = st.st_dev;
	ep->ino = st.st_ino;
	ep->have_file = true;
	ep->listener = evconnlistener_new(s->base, accept_cb, ep,
					  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (ep->listener == NULL) {
		close(fd);
		endpoint_unlink(ep);
		endpoint_backoff(ep, "cannot watch %s", r->sock);
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(ep->listener, accept_error_cb);
	return 0;
}

void
dp_server_resource_added(struct dp_server *s, struct dp_resource *r)
{
	struct dp_endpoint *ep;

	if (s == NULL)
		return;
	ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return;
	ep->srv = s;
	ep->r = r;
	ep->timer = evtimer_new(s->base, endpoint_timer_cb, ep);
	ep->soon = evtimer_new(s->base, endpoint_soon_cb, ep);
	if (ep->timer == NULL || ep->soon == NULL) {
		if (ep->timer)
			event_free(ep->timer);
		if (ep->soon)
			event_free(ep->soon);
		free(ep);
		return;
	}
	r->ep = ep;
	/* Serve first, then register: the kubelet dials back during Register. */
	if (endpoint_listen(ep) == 0)
		endpoint_register(ep);
}

static void
endpoint_free(struct dp_endpoint *ep)
{
	if (ep->reg) {
		ep->reg->reg_ep = NULL;
		ep->reg->dead = true;
		conn_reap(ep->reg);
	}
	for (struct dp_conn *c = ep->srv->conns; c; c = c->next)
		if (c->ep == ep) {
			c->ep = NULL;
			ep->r->connections--;
		}
	if (ep->refusing)
		endpoint_refusal_summary(ep, true);
	if (ep->listener)
		evconnlistener_free(ep->listener);
	endpoint_unlink(ep);
	if (ep->timer)
		event_free(ep->timer);
	if (ep->soon)
		event_free(ep->soon);
	ep->r->ep = NULL;
	free(ep);
}

void
dp_server_resource_removed(struct dp_server *s, struct dp_resource *r)
{
	if (s == NULL)
		return;
	dp_resource_end_streams(r);
	for (struct dp_conn *c = s->conns; c; c = c->next) {
		if (c->r != r)
			continue;
		c->r = NULL;
		if (!c->client) {
			/* The streams' last frames first, GOAWAY after them. */
			conn_flush(c);
			grpc_conn_shutdown(c->g);
			conn_flush(c);
		}
	}
	bus_publish(s->bus, NULL, "resource.removed", json_pack("{s:s}", "resource", r->name));
	if (r->ep)
		endpoint_free(r->ep);
}

/* --- the kubelet directory ------------------------------------------------- */

static void
register_all(struct dp_server *s, const char *why)
{
	struct dp *dp = s->dp;

	log_info("dp", "%s: registering every resource again", why);
	for (size_t i = 0; i < dp_resource_count(dp); i++) {
		dp_resource_at(dp, i)->backoff_step = 0;
		if (dp_resource_at(dp, i)->ep)
			endpoint_register_soon(dp_resource_at(dp, i)->ep, why);
	}
}

static int
open_dir(struct dp_server *s)
{
	const char *dir = s->kubelet_dir;
	struct stat st;

	if (s->dirfd >= 0)
		close(s->dirfd);
	s->dirfd = -1;
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		return -errno;
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		return -errno;
	if (fstat(s->dirfd, &st) < 0 || !S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (s->ifd >= 0) {
		s->dir_wd = inotify_add_watch(s->ifd, dir, IN_CREATE | IN_DELETE | IN_MOVED_FROM |
							       IN_MOVED_TO | IN_DELETE_SELF |
							       IN_MOVE_SELF | IN_ONLYDIR);
		if (s->dir_wd < 0)
			log_warn("dp", "cannot watch %s; kubelet restarts are noticed only by failed streams",
				 dir);
	}
	return 0;
}

static void
dir_lost(struct dp_server *s)
{
	struct timeval tv = { DIR_POLL_S, 0 };
	struct dp *dp = s->dp;

	log_warnx("dp", "%s went away; waiting for it to come back", s->kubelet_dir);
	for (size_t i = 0; i < dp_resource_count(dp); i++) {
		struct dp_endpoint *ep = dp_resource_at(dp, i)->ep;

		if (ep == NULL)
			continue;
		if (ep->listener) {
			evconnlistener_free(ep->listener);
			ep->listener = NULL;
		}
		ep->have_file = false;
		dp_reg_set_state(dp_resource_at(dp, i), DP_REG_WAIT_KUBELET, "the kubelet directory went away");
	}
	if (s->dirfd >= 0)
		close(s->dirfd);
	s->dirfd = -1;
	evtimer_add(s->dir_poll, &tv);
}

static void
dir_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_server *s = arg;
	struct timeval tv = { DIR_POLL_S, 0 };
	struct stat st;

	if (stat(s->kubelet_dir, &st) < 0 || open_dir(s) < 0) {
		evtimer_add(s->dir_poll, &tv);
		return;
	}
	register_all(s, "the kubelet directory is back");
}

static struct dp_endpoint *
endpoint_by_sock(struct dp_server *s, const char *name)
{
	struct dp *dp = s->dp;

	for (size_t i = 0; i < dp_resource_count(dp); i++)
		if (dp_resource_at(dp, i)->ep && strcmp(dp_resource_at(dp, i)->sock, name) == 0)
			return dp_resource_at(dp, i)->ep;
	return NULL;
}

/* Watches <dev-root>/vfio, so group nodes are cached and their health
 * follows inotify; without the watch each look reads /dev. */
static void
vfio_watch(struct dp_server *s)
{
	char vfio[4096];

	if (s->ifd < 0 || s->vfio_wd >= 0)
		return;
	snprintf(vfio, sizeof(vfio), "%s/vfio", s->dev_root);
	s->vfio_wd = inotify_add_watch(s->ifd, vfio, IN_CREATE | IN_DELETE | IN_MOVED_FROM |
							     IN_MOVED_TO | IN_DELETE_SELF |
							     IN_MOVE_SELF | IN_ONLYDIR);
	if (s->dp)
		dp_vfio_watched(s->dp, s->vfio_wd >= 0);
}

static void
vfio_unwatch(struct dp_server *s)
{
	if (s->vfio_wd >= 0)
		inotify_rm_watch(s->ifd, s->vfio_wd);
	s->vfio_wd = -1;
	if (s->dp) {
		dp_vfio_watched(s->dp, false);
		dp_resources_changed(s->dp);
	}
}

static void
inotify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_server *s = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool kubelet_back = false, lost = false, vfio_lost = false;
	ssize_t n;

	while ((n = read(s->ifd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			const char *name = ev->len ? ev->name : "";

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				/* Events were lost: trust nothing cached, look
				 * at the kubelet again. */
				log_warnx("dp", "inotify queue overflowed; reading everything again");
				vfio_lost = true;
				kubelet_back = kubelet_present(s);
				continue;
			}
			if (ev->wd == s->vfio_wd && s->vfio_wd >= 0) {
				/* A group's node came or went: its members'
				 * health changes now, not at the next resync. */
				if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
					vfio_lost = true;
				else if (s->dp)
					dp_vfio_event(s->dp, name,
						      (ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0);
				continue;
			}
			if (ev->wd != s->dir_wd)
				continue;
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
				lost = true;
				continue;
			}
			if (strcmp(name, KUBELET_SOCK) == 0 && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
				kubelet_back = true;
				continue;
			}
			if (ev->mask & (IN_DELETE | IN_MOVED_FROM | IN_CREATE | IN_MOVED_TO)) {
				struct dp_endpoint *ep = endpoint_by_sock(s, name);
				struct stat st;

				/* Ours is gone (a kubelet restart wipes the directory)
				 * or something else now sits at its name: serve again
				 * and register again; what is not ours is left alone. */
				if (ep && ep->have_file &&
				    (fstatat(s->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
				     st.st_ino != ep->ino || st.st_dev != ep->dev)) {
					ep->have_file = false;
					ep->r->backoff_step = 0;
					if (endpoint_listen(ep) == 0)
						endpoint_register_soon(ep, "our socket was removed or replaced");
				}
			}
		}
	}
	if (vfio_lost)
		vfio_unwatch(s);	/* every device again; watched anew then */
	if (lost) {
		dir_lost(s);
		return;
	}
	if (kubelet_back)
		register_all(s, "kubelet.sock appeared");
}

static void
kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_server *s = arg;
	struct dp *dp = s->dp;
	struct dp_conn *next;

	if (dp_full_pass_due(dp))
		vfio_watch(s);		/* a full pass: watch it if it came since */
	if (dp_recompute_due(dp))
		dp_recompute(dp);
	if (dp_aer_next(dp) > 0) {
		struct timespec ts;
		struct timeval tv = { 1, 0 };

		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (dp_aer_next(dp) > ts.tv_sec)
			tv.tv_sec = dp_aer_next(dp) - ts.tv_sec;
		evtimer_add(s->aer_ev, &tv);
	}
	dp_push_updates(dp);
	for (struct dp_conn *c = s->conns; c; c = next) {
		next = c->next;
		conn_flush(c);
		conn_reap(c);
	}
}

/* An AER hold may be over: its device is Healthy again. */
static void
aer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_server *s = arg;

	dp_resources_changed(s->dp);
}

/* Deadlines of the server connections: the handshake, a request's body,
 * an idle connection (no stream), a close that does not finish. */
static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_server *s = arg;
	struct dp *dp = s->dp;
	int64_t now = now_ms();
	struct dp_conn *next;
	bool any = false;

	for (struct dp_conn *c = s->conns; c; c = next) {
		next = c->next;
		if (c->client || c->dead)
			continue;
		any = true;
		if (c->closing_ms && now - c->closing_ms >= s->handshake_ms) {
			conn_close_now(c);	/* the peer does not read its GOAWAY */
			continue;
		}
		if (!grpc_conn_established(c->g)) {
			if (now - c->born_ms >= s->handshake_ms) {
				log_debug("dp", "%s: no HTTP/2 handshake within %d ms; closing",
					  c->r ? c->r->name : "connection", s->handshake_ms);
				conn_close_now(c);
			}
			continue;
		}
		if (grpc_conn_expire_requests(c->g, s->request_ms) > 0) {
			log_debug("dp", "%s: a request's body did not arrive within %d ms",
				  c->r ? c->r->name : "connection", s->request_ms);
			conn_flush(c);
		}
		if (grpc_conn_open_calls(c->g) > 0) {
			c->idle_since_ms = now;
			continue;
		}
		if (c->closing_ms == 0 && now - c->idle_since_ms >= s->idle_ms) {
			log_debug("dp", "%s: connection with no stream for %d ms; closing",
				  c->r ? c->r->name : "connection", s->idle_ms);
			c->closing_ms = now;
			grpc_conn_shutdown(c->g);
			conn_flush(c);
			conn_reap(c);
		}
	}
	for (size_t i = 0; dp && i < dp_resource_count(dp); i++) {
		struct dp_endpoint *ep = dp_resource_at(dp, i)->ep;

		if (ep && ep->refusing && now - ep->refusing_since_ms >= REFUSAL_SUMMARY_MS)
			endpoint_refusal_summary(ep, ep->r->connections < MAX_CONNS);
	}
	if (any)
		sweep_arm(s);
}

void
dp_server_kick(struct dp_server *s)
{
	if (s && !event_pending(s->kick_ev, EV_TIMEOUT, NULL))
		event_active(s->kick_ev, EV_TIMEOUT, 0);
}

int
dp_server_new(struct dp *dp, struct bus *bus, const char *kubelet_dir, const char *dev_root,
	      struct event_base *base, struct dp_server **ret)
{
	struct dp_server *s = calloc(1, sizeof(*s));
	int err;

	if (s == NULL)
		return -ENOMEM;
	s->dp = dp;
	s->bus = bus;
	s->kubelet_dir = strdup(kubelet_dir);
	s->dev_root = strdup(dev_root);
	if (s->kubelet_dir == NULL || s->dev_root == NULL) {
		free(s->kubelet_dir);
		free(s->dev_root);
		free(s);
		return -ENOMEM;
	}
	s->base = base;
	s->dirfd = -1;
	s->dir_wd = s->vfio_wd = -1;
	s->cwdfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->cwdfd < 0)
		s->cwdfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	s->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	s->kick_ev = event_new(base, -1, 0, kick_cb, s);
	s->dir_poll = evtimer_new(base, dir_poll_cb, s);
	s->sweep_ev = evtimer_new(base, sweep_cb, s);
	s->aer_ev = evtimer_new(base, aer_cb, s);
	s->budget.max = INPUT_BUDGET;
	s->idle_ms = IDLE_MS;
	s->handshake_ms = HANDSHAKE_MS;
	s->request_ms = REQUEST_MS;
	if (getenv("HOSTDEVD_TEST_DP_TIMEOUTS")) {
		/* Test-only: "idle,handshake,request" in ms, so tests need not wait
		 * a minute. */
		int idle, hs, req;

		if (sscanf(getenv("HOSTDEVD_TEST_DP_TIMEOUTS"), "%d,%d,%d", &idle, &hs, &req) == 3 &&
		    idle > 0 && hs > 0 && req > 0) {
			s->idle_ms = idle;
			s->handshake_ms = hs;
			s->request_ms = req;
			log_warnx("dp", "test timeouts: idle %d ms, handshake %d ms, request %d ms",
				  idle, hs, req);
		}
	}
	if (s->cwdfd < 0 || s->kick_ev == NULL || s->dir_poll == NULL || s->sweep_ev == NULL ||
	    s->aer_ev == NULL) {
		dp_server_free(s);
		return -ENOMEM;
	}
	if (s->ifd >= 0) {
		s->iev = event_new(base, s->ifd, EV_READ | EV_PERSIST, inotify_cb, s);
		if (s->iev)
			event_add(s->iev, NULL);
		vfio_watch(s);
	} else {
		log_warn("dp", "inotify");
	}
	err = open_dir(s);
	if (err < 0) {
		struct timeval tv = { DIR_POLL_S, 0 };

		log_warnx("dp", "kubelet directory %s: %s; waiting for it", s->kubelet_dir,
			  strerror(-err));
		evtimer_add(s->dir_poll, &tv);
	}
	*ret = s;
	return 0;
}

/* Pushes what is queued for a connection straight to its socket: at exit
 * there is no later loop turn to do it. (A bufferevent's output cannot be
 * drained by evbuffer_write, so the bytes are copied out.) */
static void
conn_drain_now(struct dp_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int fd = (int)bufferevent_getfd(c->bev);
	size_t off = 0, len;
	unsigned char *p;

	/* The streams' last frames first, then GOAWAY behind them. */
	while (grpc_conn_flush(c->g, FLUSH_BUDGET) && evbuffer_get_length(out) < 4 * OUTPUT_HIGH)
		;
	if (!c->client) {
		grpc_conn_shutdown(c->g);
		while (grpc_conn_flush(c->g, FLUSH_BUDGET) &&
		       evbuffer_get_length(out) < 4 * OUTPUT_HIGH)
			;
	}
	len = evbuffer_get_length(out);
	p = fd >= 0 ? evbuffer_pullup(out, -1) : NULL;
	while (p && off < len) {
		ssize_t n = send(fd, p + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n <= 0)
			break;
		off += (size_t)n;
	}
}

void
dp_server_free(struct dp_server *s)
{
	struct dp *dp;

	if (s == NULL)
		return;
	dp = s->dp;
	if (dp) {
		dp_stop_all(dp);
		for (size_t i = 0; i < dp_resource_count(dp); i++)
			if (dp_resource_at(dp, i)->ep)
				endpoint_free(dp_resource_at(dp, i)->ep);
	}
	s->stopping = true;
	for (struct dp_conn *c = s->conns; c; c = c->next)
		conn_drain_now(c);
	while (s->conns)
		conn_free(s->conns);
	if (s->iev)
		event_free(s->iev);
	if (s->kick_ev)
		event_free(s->kick_ev);
	if (s->dir_poll)
		event_free(s->dir_poll);
	if (s->sweep_ev)
		event_free(s->sweep_ev);
	if (s->aer_ev)
		event_free(s->aer_ev);
	if (s->ifd >= 0)
		close(s->ifd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	if (s->cwdfd >= 0)
		close(s->cwdfd);
	free(s->kubelet_dir);
	free(s->dev_root);
	free(s);
}
