/* SPDX-License-Identifier: MIT */
/* The control socket's libevent side: listener, clients, limits, broadcast. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl-server.h"
#include "ctl.h"
#include "daemon.h"
#include "log.h"

/* Stop reading a client's requests while this much output waits for it. */
#define CTL_OUTPUT_HIGH (1024 * 1024)
/* A client that is not subscribed and sends nothing for this long is closed. */
#define CTL_IDLE_TIMEOUT_S 300

struct ctl_client {
	struct ctl_server *srv;
	struct bufferevent *bev;
	struct ctl_peer peer;
	struct ctl_client *next, *prev;
	bool discarding;	/* skipping the rest of an over-long line */
	bool closing;		/* flush what is queued, then close */
	bool paused;		/* reading stopped for backpressure */
	bool eof;		/* the peer closed its side */
};

struct ctl_server {
	struct daemon *d;
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *backoff;
	char *path;
	struct ctl_client *clients;
	int nclients, nsubscribers;
	uint64_t next_serial;
	int max_clients;
	size_t max_output;
};

static void client_read_cb(struct bufferevent *bev, void *arg);

static void
client_free(struct ctl_client *c)
{
	struct ctl_server *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nclients--;
	if (c->peer.subscribed)
		s->nsubscribers--;
	json_decref(c->peer.event_types);
	bufferevent_free(c->bev);
	free(c);
	/* A slot is free again; resume accepting if we had paused for it. */
	if (s->nclients == s->max_clients - 1 && s->listener && !evtimer_pending(s->backoff, NULL))
		evconnlistener_enable(s->listener);
}

static void
client_send(struct ctl_client *c, const json_t *msg)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char *text = json_dumps(msg, JSON_COMPACT);

	if (text == NULL)
		return;
	evbuffer_add(out, text, strlen(text));
	evbuffer_add(out, "\n", 1);
	free(text);
}

static void
client_update_subscription(struct ctl_client *c, bool was)
{
	if (was == c->peer.subscribed)
		return;
	c->srv->nsubscribers += c->peer.subscribed ? 1 : -1;
	/* Subscribers may be silent for ever; others get an idle timeout. */
	if (c->peer.subscribed) {
		bufferevent_set_timeouts(c->bev, NULL, NULL);
	} else {
		struct timeval tv = { CTL_IDLE_TIMEOUT_S, 0 };
		bufferevent_set_timeouts(c->bev, &tv, NULL);
	}
}

static void
client_handle(struct ctl_client *c, const char *line, size_t len)
{
	bool was = c->peer.subscribed;
	json_t *resp = ctl_handle_line(c->srv->d, &c->peer, line, len);

	if (resp) {
		client_send(c, resp);
		json_decref(resp);
	}
	client_update_subscription(c, was);
}

/* Handles complete lines while the client's output is below the mark. */
static void
client_process(struct ctl_client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);

	while (!c->closing) {
		struct evbuffer_ptr eol;
		size_t len;
		char *line;

		if (evbuffer_get_length(out) >= CTL_OUTPUT_HIGH) {
			/* Backpressure: resume from the write callback. */
			bufferevent_disable(c->bev, EV_READ);
			c->paused = true;
			return;
		}
		eol = evbuffer_search(in, "\n", 1, NULL);
		if (eol.pos < 0) {
			len = evbuffer_get_length(in);
			if (len > CTL_MAX_LINE) {
				if (!c->discarding) {
					json_t *e = ctl_error_response(NULL, CTL_INVALID_REQUEST,
								       "request line longer than 65536 bytes");
					client_send(c, e);
					json_decref(e);
					log_info("ctl", "client pid %d: request over %d bytes discarded",
						 (int)c->peer.pid, CTL_MAX_LINE);
				}
				c->discarding = true;
				evbuffer_drain(in, len);
			}
			return;
		}
		len = (size_t)eol.pos;
		if (c->discarding) {
			evbuffer_drain(in, len + 1);
			c->discarding = false;
			continue;
		}
		if (len > CTL_MAX_LINE) {
			json_t *e = ctl_error_response(NULL, CTL_INVALID_REQUEST,
						       "request line longer than 65536 bytes");
			client_send(c, e);
			json_decref(e);
			evbuffer_drain(in, len + 1);
			continue;
		}
		line = (char *)evbuffer_pullup(in, (ssize_t)len + 1);
		if (line == NULL) {
			c->closing = true;
			break;
		}
		client_handle(c, line, len);
		evbuffer_drain(in, len + 1);
	}
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	client_process(arg);
}

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct ctl_client *c = arg;

	if (c->closing) {
		client_free(c);
		return;
	}
	if (c->paused) {
		c->paused = false;
		bufferevent_enable(c->bev, EV_READ);
		client_process(c);
	}
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_client *c = arg;

	if (what & BEV_EVENT_EOF) {
		/* Half-close: answer what was sent (socat closes its side). */
		struct evbuffer *in = bufferevent_get_input(bev);

		if (evbuffer_get_length(in) > 0 && !c->discarding) {
			size_t len = evbuffer_get_length(in);
			char *line = (char *)evbuffer_pullup(in, -1);

			if (line && len <= CTL_MAX_LINE)
				client_handle(c, line, len);
			evbuffer_drain(in, len);
		}
		/* A subscriber may close its sending side and keep listening
		 * (socat -t with a long timeout): stop reading, keep streaming. */
		c->eof = true;
		if (c->peer.subscribed || c->peer.pending > 0) {
			/* Answers are still to come (a claim takes its time). */
			bufferevent_disable(bev, EV_READ);
			return;
		}
		if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
			c->closing = true;
			bufferevent_disable(bev, EV_READ);
			return;
		}
	} else if (what & BEV_EVENT_TIMEOUT) {
		log_debug("ctl", "client pid %d idle; closing", (int)c->peer.pid);
	} else if (what & BEV_EVENT_ERROR) {
		log_debug("ctl", "client pid %d: %s", (int)c->peer.pid,
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
	client_free(c);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen,
	  void *arg)
{
	struct ctl_server *s = arg;
	struct ctl_client *c;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct timeval idle = { CTL_IDLE_TIMEOUT_S, 0 };

	if (s->nclients >= s->max_clients) {
		static const char msg[] = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,"
					  "\"message\":\"too many clients\"}}\n";
		/* Best effort, non-blocking: the socket buffer of a new connection
		 * has room for one line. */
		if (send(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			log_debug("ctl", "could not tell a refused client why");
		close(fd);
		log_warnx("ctl", "refused a client: %d clients connected (control.max_clients)",
			  s->nclients);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		c->peer.uid = cred.uid;
		c->peer.gid = cred.gid;
		c->peer.pid = cred.pid;
	} else {
		/* Unknown peer: treat as unprivileged. */
		c->peer.uid = (uid_t)-1;
		c->peer.gid = (gid_t)-1;
		c->peer.pid = -1;
	}
	c->srv = s;
	c->peer.serial = ++s->next_serial;
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_set_timeouts(c->bev, &idle, NULL);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = s->clients;
	if (s->clients)
		s->clients->prev = c;
	s->clients = c;
	s->nclients++;
	log_debug("ctl", "client pid %d uid %u connected", (int)c->peer.pid, (unsigned)c->peer.uid);
}

static void
backoff_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_server *s = arg;

	evconnlistener_enable(s->listener);
}

/* Out of file descriptors: stop accepting for a second instead of spinning. */
static void
accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct ctl_server *s = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { 1, 0 };

	log_warnx("ctl", "accept: %s; pausing for 1 s", evutil_socket_error_to_string(err));
	evconnlistener_disable(lev);
	evtimer_add(s->backoff, &tv);
}

static int
prepare_path(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, err;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		log_errx("ctl", "%s exists and is not a socket; not touching it", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	err = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
	close(fd);
	if (err == 0) {
		log_errx("ctl", "%s: another hostdevd is answering there", path);
		return -EADDRINUSE;
	}
	if (unlink(path) < 0)
		return -errno;
	return 0;
}

static int
make_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return 0;
	*slash = '\0';
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int
ctl_server_new(struct daemon *d, struct event_base *base, const char *path,
	       struct ctl_server **ret)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ctl_server *s;
	mode_t old_umask;
	int fd, err;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_errx("ctl", "control socket path longer than %zu bytes: %s",
			 sizeof(sun.sun_path) - 1, path);
		return -ENAMETOOLONG;
	}
	err = make_parent(path);
	if (err < 0) {
		log_errx("ctl", "cannot create the directory of %s: %s", path, strerror(-err));
		return err;
	}
	err = prepare_path(path);
	if (err < 0)
		return err;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->d = d;
	s->base = base;
	s->max_clients = d->cfg->control_max_clients;
	s->max_output = d->cfg->control_max_output;
	s->path = strdup(path);
	s->backoff = evtimer_new(base, backoff_cb, s);
	if (s->path == NULL || s->backoff == NULL) {
		ctl_server_free(s);
		return -ENOMEM;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		err = -errno;
		ctl_server_free(s);
		return err;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	old_umask = umask(0117);	/* the socket is born 0660 */
	err = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old_umask);
	if (err < 0 || listen(fd, 128) < 0) {
		err = -errno;
		log_err("ctl", "cannot listen on %s", path);
		close(fd);
		ctl_server_free(s);
		return err;
	}
	if (d->cfg->control_group && chown(path, (uid_t)-1, d->cfg->control_gid) < 0)
		log_warn("ctl", "cannot give %s to group %s", path, d->cfg->control_group);
	s->listener = evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
					 -1, fd);
	if (s->listener == NULL) {
		close(fd);
		unlink(path);
		ctl_server_free(s);
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(s->listener, accept_error_cb);
	*ret = s;
	log_info("ctl", "listening on %s", path);
	return 0;
}

void
ctl_server_free(struct ctl_server *s)
{
	if (s == NULL)
		return;
	while (s->clients)
		client_free(s->clients);
	if (s->listener) {
		evconnlistener_free(s->listener);
		unlink(s->path);
	}
	if (s->backoff)
		event_free(s->backoff);
	free(s->path);
	free(s);
}

void
ctl_server_set_limits(struct ctl_server *s, int max_clients, size_t max_output)
{
	s->max_clients = max_clients;
	s->max_output = max_output;
}

void
ctl_server_send_to(struct daemon *d, uint64_t serial, json_t *resp)
{
	struct ctl_server *s = d->ctl;

	for (struct ctl_client *c = s ? s->clients : NULL; c && resp; c = c->next) {
		if (c->peer.serial != serial || c->closing)
			continue;
		client_send(c, resp);
		if (c->peer.pending > 0)
			c->peer.pending--;
		if (c->eof && c->peer.pending == 0 && !c->peer.subscribed)
			c->closing = true;	/* freed once the answer is written */
		break;
	}
	/* Gone: the operation went on all the same; claims.list tells. */
	json_decref(resp);
}

bool
ctl_server_has_subscribers(const struct ctl_server *s)
{
	return s->nsubscribers > 0;
}

int
ctl_server_clients(const struct ctl_server *s)
{
	return s->nclients;
}

int
ctl_server_subscribers(const struct ctl_server *s)
{
	return s->nsubscribers;
}

void
ctl_server_broadcast(struct ctl_server *s, const json_t *note, const char *type)
{
	struct ctl_client *c, *next;
	char *text = NULL;
	size_t len = 0;

	for (c = s->clients; c; c = next) {
		struct evbuffer *out;

		next = c->next;
		if (c->closing || !ctl_peer_wants(&c->peer, type))
			continue;
		out = bufferevent_get_output(c->bev);
		if (evbuffer_get_length(out) > s->max_output) {
			log_warnx("ctl", "subscriber pid %d has %zu bytes unread; disconnecting it",
				  (int)c->peer.pid, evbuffer_get_length(out));
			client_free(c);
			continue;
		}
		if (text == NULL) {
			text = json_dumps(note, JSON_COMPACT);
			if (text == NULL)
				return;
			len = strlen(text);
			text[len] = '\0';
		}
		evbuffer_add(out, text, len);
		evbuffer_add(out, "\n", 1);
	}
	free(text);
}
