/* SPDX-License-Identifier: MIT */
/* The kubelet side on libevent: endpoint sockets, Register, inotify, streams. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
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

#include "daemon.h"
#include "dp-server.h"
#include "dp.h"
#include "grpc.h"
#include "log.h"

#define KUBELET_SOCK "kubelet.sock"
#define OUTPUT_HIGH (1024 * 1024)	/* stop generating frames above this */
#define FLUSH_BUDGET (256 * 1024)
#define REGISTER_TIMEOUT_S 15
#define DIR_POLL_S 1

static const int backoff_s[] = { 1, 2, 5, 10 };

struct dp_conn {
	struct dp_server *srv;
	struct bufferevent *bev;
	struct grpc_conn *g;
	struct dp_resource *r;
	struct dp_endpoint *reg_ep;	/* client: the endpoint registering */
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
	struct event *timer;
};

struct dp_server {
	struct daemon *d;
	struct event_base *base;
	int dirfd, cwdfd;
	int ifd;
	int dir_wd, vfio_wd;		/* the kubelet directory, <dev-root>/vfio */
	struct event *iev;
	struct event *kick_ev;
	struct event *dir_poll;
	struct dp_conn *conns;
	bool stopping;
};

static void conn_flush(struct dp_conn *c);
static void endpoint_register(struct dp_endpoint *ep);
static int endpoint_listen(struct dp_endpoint *ep);

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

	dp_handle(c->srv->d->dp, c->r, call, path, msg, len);
}

static void
g_call_closed(void *arg, struct grpc_call *call)
{
	struct dp_conn *c = arg;
	struct dp_server *s = c->srv;

	if (s->stopping || c->r == NULL)
		return;
	/* The kubelet never reopens ListAndWatch itself: register again. */
	if (dp_call_closed(s->d->dp, c->r, call) && c->r->ep) {
		c->r->backoff_step = 0;
		endpoint_register(c->r->ep);
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
	r->state = DP_REG_REGISTERED;
	r->registrations++;
	r->registered_at = (int64_t)time(NULL);
	r->backoff_step = 0;
	r->last_error[0] = '\0';
	log_info("dp", "%s: registered with the kubelet", r->name);
	daemon_emit(c->srv->d, "resource.registered", json_pack("{s:s}", "resource", r->name));
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
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	return c;
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen,
	  void *arg)
{
	struct dp_endpoint *ep = arg;
	struct dp_conn *c = conn_new(ep->srv, fd, false, ep->r);

	if (c == NULL)
		return;
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
	int step = r->backoff_step < 3 ? r->backoff_step : 3;
	struct timeval tv = { backoff_s[step], 0 };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->last_error, sizeof(r->last_error), fmt, ap);
	va_end(ap);
	if (ep->srv->stopping)
		return;
	if (r->backoff_step < 3)
		r->backoff_step++;
	if (r->state != DP_REG_FAILED)
		r->state = DP_REG_BACKOFF;
	log_warnx("dp", "%s: %s; retrying in %d s", r->name, r->last_error, backoff_s[step]);
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
	if (ep->reg) {
		ep->reg->reg_ep = NULL;
		ep->reg->dead = true;
		conn_reap(ep->reg);
		ep->reg = NULL;
	}
	if (!ep->have_file && endpoint_listen(ep) < 0)
		return;
	if (!kubelet_present(s)) {
		r->state = DP_REG_WAIT_KUBELET;
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
	r->state = DP_REG_REGISTERING;
	conn_flush(ep->reg);
	evtimer_add(ep->timer, &tv);
	log_debug("dp", "%s: Register sent", r->name);
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
			 s->d->opts.kubelet_dir);
		r->state = DP_REG_WAIT_KUBELET;
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
	if (ep->listener)
		evconnlistener_free(ep->listener);
	endpoint_unlink(ep);
	if (ep->timer)
		event_free(ep->timer);
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
	daemon_emit(s->d, "resource.removed", json_pack("{s:s}", "resource", r->name));
	if (r->ep)
		endpoint_free(r->ep);
}

/* --- the kubelet directory ------------------------------------------------- */

static void
register_all(struct dp_server *s, const char *why)
{
	struct dp *dp = s->d->dp;

	log_info("dp", "%s: registering every resource again", why);
	for (size_t i = 0; i < dp->n; i++) {
		dp->v[i]->backoff_step = 0;
		if (dp->v[i]->ep)
			endpoint_register(dp->v[i]->ep);
	}
}

static int
open_dir(struct dp_server *s)
{
	const char *dir = s->d->opts.kubelet_dir;
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
	struct dp *dp = s->d->dp;

	log_warnx("dp", "%s went away; waiting for it to come back", s->d->opts.kubelet_dir);
	for (size_t i = 0; i < dp->n; i++) {
		struct dp_endpoint *ep = dp->v[i]->ep;

		if (ep == NULL)
			continue;
		if (ep->listener) {
			evconnlistener_free(ep->listener);
			ep->listener = NULL;
		}
		ep->have_file = false;
		dp->v[i]->state = DP_REG_WAIT_KUBELET;
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

	if (stat(s->d->opts.kubelet_dir, &st) < 0 || open_dir(s) < 0) {
		evtimer_add(s->dir_poll, &tv);
		return;
	}
	register_all(s, "the kubelet directory is back");
}

static struct dp_endpoint *
endpoint_by_sock(struct dp_server *s, const char *name)
{
	struct dp *dp = s->d->dp;

	for (size_t i = 0; i < dp->n; i++)
		if (dp->v[i]->ep && strcmp(dp->v[i]->sock, name) == 0)
			return dp->v[i]->ep;
	return NULL;
}

static void
inotify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dp_server *s = arg;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool kubelet_back = false, lost = false, vfio_changed = false;
	ssize_t n;

	while ((n = read(s->ifd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			const char *name = ev->len ? ev->name : "";

			p += sizeof(*ev) + ev->len;
			if (ev->wd == s->vfio_wd) {
				/* A group's node came or went: health changes now,
				 * not at the next resync. */
				vfio_changed = true;
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
					log_info("dp", "%s: our socket %s was removed or replaced",
						 ep->r->name, name);
					ep->have_file = false;
					ep->r->backoff_step = 0;
					endpoint_register(ep);
				}
			}
		}
	}
	if (vfio_changed && s->d->dp) {
		s->d->dp->dirty = true;
		dp_server_kick(s);
	}
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
	struct dp *dp = s->d->dp;
	struct dp_conn *next;

	if (dp->dirty)
		dp_recompute(dp);
	dp_push_updates(dp);
	for (struct dp_conn *c = s->conns; c; c = next) {
		next = c->next;
		conn_flush(c);
		conn_reap(c);
	}
}

void
dp_server_kick(struct dp_server *s)
{
	if (s && !event_pending(s->kick_ev, EV_TIMEOUT, NULL))
		event_active(s->kick_ev, EV_TIMEOUT, 0);
}

int
dp_server_new(struct daemon *d, struct event_base *base, struct dp_server **ret)
{
	struct dp_server *s = calloc(1, sizeof(*s));
	int err;

	if (s == NULL)
		return -ENOMEM;
	s->d = d;
	s->base = base;
	s->dirfd = -1;
	s->dir_wd = s->vfio_wd = -1;
	s->cwdfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->cwdfd < 0)
		s->cwdfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	s->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	s->kick_ev = event_new(base, -1, 0, kick_cb, s);
	s->dir_poll = evtimer_new(base, dir_poll_cb, s);
	if (s->cwdfd < 0 || s->kick_ev == NULL || s->dir_poll == NULL) {
		dp_server_free(s);
		return -ENOMEM;
	}
	if (s->ifd >= 0) {
		char vfio[4096];

		s->iev = event_new(base, s->ifd, EV_READ | EV_PERSIST, inotify_cb, s);
		if (s->iev)
			event_add(s->iev, NULL);
		snprintf(vfio, sizeof(vfio), "%s/vfio", d->opts.dev_root);
		s->vfio_wd = inotify_add_watch(s->ifd, vfio, IN_CREATE | IN_DELETE | IN_MOVED_FROM |
							       IN_MOVED_TO | IN_ONLYDIR);
	} else {
		log_warn("dp", "inotify");
	}
	err = open_dir(s);
	if (err < 0) {
		struct timeval tv = { DIR_POLL_S, 0 };

		log_warnx("dp", "kubelet directory %s: %s; waiting for it", d->opts.kubelet_dir,
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
	dp = s->d->dp;
	if (dp) {
		dp_stop_all(dp);
		for (size_t i = 0; i < dp->n; i++)
			if (dp->v[i]->ep)
				endpoint_free(dp->v[i]->ep);
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
	if (s->ifd >= 0)
		close(s->ifd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	if (s->cwdfd >= 0)
		close(s->cwdfd);
	free(s);
}
