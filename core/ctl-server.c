/* SPDX-License-Identifier: MIT */
/* The control socket's libevent side: listener, clients, limits, broadcast. */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bus.h"
#include "ctl-server.h"
#include "ctl.h"
#include "log.h"

/* Stop reading a client's requests while this much output waits for it. */
#define CTL_OUTPUT_HIGH (1024 * 1024)
/* A client that is not subscribed and sends nothing for this long is closed. */
#define CTL_IDLE_TIMEOUT_S 300
/* Requests handled for one client in one loop turn before the others get theirs. */
#define CTL_LINES_PER_TURN 16

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

struct ctl_client {
	struct ctl_server *srv;
	struct bufferevent *bev;
	struct ctl_peer peer;
	struct ctl_client *next, *prev;
	bool discarding;	/* skipping the rest of an over-long line */
	bool closing;		/* flush what is queued, then close */
	bool paused;		/* reading stopped for backpressure */
	bool eof;		/* the peer closed its side */
	bool dead;		/* off the list, freed from a later loop turn */
};

struct ctl_server {
	struct ctl_server_hooks hooks;
	struct ctl_server_limits limits;
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *backoff;
	char *path;
	struct ctl_client *clients;
	struct ctl_client *dead;	/* killed, waiting for the reaper (linked by next) */
	struct event *reaper;
	struct event *refuse_timer;	/* while pending, refusals are only counted */
	unsigned refused_quiet;
	int nclients, nsubscribers;
	uint64_t events_sent;		/* notifications queued to subscribers */
	uint64_t next_serial;
};

static void client_read_cb(struct bufferevent *bev, void *arg);

static void
client_free(struct ctl_client *c)
{
	ctl_peer_clear(&c->peer);
	bufferevent_free(c->bev);
	free(c);
}

/* Takes the client off the list at once (its slot is free again) but frees
 * it from a later loop turn: it may be the client whose request is being
 * handled (a broadcast its own request caused), tmux style. */
static void
client_kill(struct ctl_client *c)
{
	struct ctl_server *s = c->srv;

	if (c->dead)
		return;
	c->dead = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nclients--;
	if (c->peer.subscribed)
		s->nsubscribers--;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	c->prev = NULL;
	c->next = s->dead;
	s->dead = c;
	event_active(s->reaper, EV_TIMEOUT, 0);
	/* A slot is free again; resume accepting if we had paused for it. */
	if (s->nclients == s->limits.max_clients - 1 && s->listener && !evtimer_pending(s->backoff, NULL))
		evconnlistener_enable(s->listener);
}

static void
reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_server *s = arg;

	while (s->dead) {
		struct ctl_client *c = s->dead;

		s->dead = c->next;
		client_free(c);
	}
}

/* Unsent output held for every client together. */
static size_t
total_output(const struct ctl_server *s)
{
	size_t total = 0;

	for (const struct ctl_client *c = s->clients; c; c = c->next)
		total += evbuffer_get_length(bufferevent_get_output(c->bev));
	return total;
}

static void
free_text_cb(const void *data, size_t len, void *arg)
{
	free((void *)data);
}

static void
client_send(struct ctl_client *c, const json_t *msg)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char *text;

	if (c->dead)
		return;
	text = json_dumps(msg, JSON_COMPACT);
	if (text == NULL)
		return;
	/* The text goes into the buffer as it is, not copied: one copy of
	 * a large answer, not two. */
	if (evbuffer_add_reference(out, text, strlen(text), free_text_cb, NULL) < 0)
		free(text);
	evbuffer_add(out, "\n", 1);
}

/* Reading: idle clients that are not subscribed are closed. Writing: a
 * client that takes nothing of what waits for it (paused at the output
 * limit, or a subscriber that stopped reading) is closed after the stall
 * timeout; libevent counts it only while output is pending. */
static void
client_set_timeouts(struct ctl_client *c)
{
	struct timeval idle = { CTL_IDLE_TIMEOUT_S, 0 };
	struct timeval stall = { c->srv->limits.stall_timeout_s, 0 };

	bufferevent_set_timeouts(c->bev, c->peer.subscribed ? NULL : &idle, &stall);
}

static void
client_update_subscription(struct ctl_client *c, bool was)
{
	if (c->dead || was == c->peer.subscribed)
		return;
	c->srv->nsubscribers += c->peer.subscribed ? 1 : -1;
	/* Subscribers may be silent for ever; others get an idle timeout. */
	client_set_timeouts(c);
}

static void
client_handle(struct ctl_client *c, const char *line, size_t len)
{
	bool was = c->peer.subscribed;
	json_t *resp = c->srv->hooks.handle_line(c->srv->hooks.arg, &c->peer, line, len);

	if (resp) {
		client_send(c, resp);
		json_decref(resp);
	}
	client_update_subscription(c, was);
}

/* Whether a request may be handled now: the answers that wait for every
 * client together stay within control.max_total_output_bytes (root is let
 * through, so hostdevctl works while others hold the budget). */
static bool
client_within_budget(struct ctl_client *c)
{
	struct ctl_server *s = c->srv;
	size_t total;

	if (c->peer.uid == 0)
		return true;
	total = total_output(s);
	if (total < s->limits.max_total_output)
		return true;
	log_debug("ctl", "client pid %d: %zu bytes wait for all clients; request refused",
		  (int)c->peer.pid, total);
	return false;
}

/* The peer closed its side and every complete line is handled: answer the
 * last unterminated one (socat closes after its line), then close once the
 * answers are out, unless more are to come. */
static void
client_at_eof(struct ctl_client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t len = evbuffer_get_length(in);

	if (len > 0) {
		char *line = c->discarding || len > CTL_MAX_LINE ? NULL :
			     (char *)evbuffer_pullup(in, -1);

		if (line)
			client_handle(c, line, len);
		if (c->dead)
			return;
		evbuffer_drain(in, len);
	}
	/* A subscriber may close its sending side and keep listening (socat
	 * -t with a long timeout); a claim's answer takes its time. */
	if (c->peer.subscribed || c->peer.pending > 0)
		return;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
		c->closing = true;	/* freed once the answers are written */
	else
		client_kill(c);
}

/* Handles complete lines while the client's output is below the mark, at
 * most CTL_LINES_PER_TURN in one go. */
static void
client_process(struct ctl_client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int handled = 0;

	while (!c->closing && !c->dead) {
		struct evbuffer_ptr eol;
		size_t len;
		char *line;

		if (c->peer.lists > 0) {
			/* A devices.list answer is being built: the next
			 * requests wait for it (ctl_server_list_done), so one
			 * client queues one at a time, in order. */
			bufferevent_disable(c->bev, EV_READ);
			return;
		}
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
			if (c->eof)
				client_at_eof(c);
			return;
		}
		if (handled++ == CTL_LINES_PER_TURN) {
			/* The rest from a later loop turn: others are answered first. */
			bufferevent_trigger(c->bev, EV_READ,
					    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
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
		if (!client_within_budget(c)) {
			json_t *e = ctl_error_response(NULL, CTL_ERR_TOO_LARGE,
						       "the daemon holds too much unsent output for its clients "
						       "(control.max_total_output_bytes); try again later");
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
		if (c->dead)
			return;		/* its own request's events dropped it */
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
		client_kill(c);
		return;
	}
	if (c->paused) {
		c->paused = false;
		if (!c->eof)
			bufferevent_enable(c->bev, EV_READ);
		client_process(c);
	}
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_client *c = arg;

	if (what & BEV_EVENT_EOF) {
		/* Half-close: answer every line that came (socat closes its
		 * side after sending), from later turns too when there are many. */
		c->eof = true;
		bufferevent_disable(bev, EV_READ);
		client_process(c);
		return;
	} else if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING)) {
		log_info("ctl", "client pid %d read nothing of its %zu waiting bytes for %d s; closing",
			 (int)c->peer.pid, evbuffer_get_length(bufferevent_get_output(bev)),
			 c->srv->limits.stall_timeout_s);
	} else if (what & BEV_EVENT_TIMEOUT) {
		log_debug("ctl", "client pid %d idle; closing", (int)c->peer.pid);
	} else if (what & BEV_EVENT_ERROR) {
		log_debug("ctl", "client pid %d: %s", (int)c->peer.pid,
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
	client_kill(c);
}

/* The peer's supplementary groups: the kernel's copy taken at connect
 * (SO_PEERGROUPS, no PID reuse race), else the live process's
 * /proc/PID/status. Returns 0 or -errno; the peer keeps no groups then. */
static int
peer_read_groups(int fd, struct ctl_peer *p)
{
	socklen_t len = 64 * sizeof(gid_t);
	char path[64], text[65536];
	gid_t *v = malloc(len);
	ssize_t n;
	int pfd, err;

	if (v == NULL)
		return -ENOMEM;
	err = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, v, &len);
	if (err < 0 && errno == ERANGE) {
		/* More than 64 groups: len now says how many bytes they take. */
		gid_t *nv = realloc(v, len);

		if (nv == NULL) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		err = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, v, &len);
	}
	if (err == 0) {
		p->groups = v;
		p->ngroups = len / sizeof(gid_t);
		return 0;
	}
	free(v);
	if (p->pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
	pfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	n = read(pfd, text, sizeof(text) - 1);
	close(pfd);
	if (n < 0)
		return -errno;
	text[n] = '\0';
	return ctl_parse_status_groups(text, &p->groups, &p->ngroups);
}

static void
refuse_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctl_server *s = arg;
	struct timeval tv = { 1, 0 };

	if (s->refused_quiet == 0)
		return;		/* quiet for a second: the next refusal logs in full */
	log_warnx("ctl", "%u more clients refused (control.max_clients)", s->refused_quiet);
	s->refused_quiet = 0;
	evtimer_add(s->refuse_timer, &tv);
}

/* One line for the first refusal; the rest of a burst is counted and
 * summed up once a second. */
static void
refuse(struct ctl_server *s, int fd, const struct ctl_peer *p)
{
	static const char msg[] = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,"
				  "\"message\":\"too many clients\"}}\n";
	struct timeval tv = { 1, 0 };

	/* Best effort, non-blocking: the socket buffer of a new connection
	 * has room for one line. */
	if (send(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("ctl", "could not tell a refused client why");
	close(fd);
	if (evtimer_pending(s->refuse_timer, NULL)) {
		s->refused_quiet++;
		return;
	}
	log_warnx("ctl", "refused a client (pid %d uid %u): %d clients connected "
		  "(control.max_clients %d, one slot kept for root)", (int)p->pid, (unsigned)p->uid,
		  s->nclients, s->limits.max_clients);
	evtimer_add(s->refuse_timer, &tv);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen,
	  void *arg)
{
	struct ctl_server *s = arg;
	struct ctl_peer peer = { 0 };
	struct ctl_client *c;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int limit;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		peer.uid = cred.uid;
		peer.gid = cred.gid;
		peer.pid = cred.pid;
	} else {
		/* Unknown peer: treat as unprivileged. */
		peer.uid = (uid_t)-1;
		peer.gid = (gid_t)-1;
		peer.pid = -1;
	}
	/* The last slot is root's: clients stuck at their limits cannot lock
	 * the administrator's hostdevctl out. */
	limit = s->limits.max_clients > 1 && peer.uid != 0 ? s->limits.max_clients - 1 : s->limits.max_clients;
	if (s->nclients >= limit) {
		refuse(s, fd, &peer);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->peer = peer;
	if (peer.uid != 0 && peer_read_groups(fd, &c->peer) < 0)
		log_debug("ctl", "client pid %d: its supplementary groups are unknown", (int)peer.pid);
	c->srv = s;
	c->peer.serial = ++s->next_serial;
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		close(fd);
		ctl_peer_clear(&c->peer);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	client_set_timeouts(c);
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
ctl_server_new(const struct ctl_server_hooks *hooks, const struct ctl_server_limits *limits,
	       struct event_base *base, const char *path, struct ctl_server **ret)
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
	s->hooks = *hooks;
	s->limits = *limits;
	s->base = base;
	s->path = strdup(path);
	s->backoff = evtimer_new(base, backoff_cb, s);
	s->reaper = event_new(base, -1, 0, reaper_cb, s);
	s->refuse_timer = evtimer_new(base, refuse_timer_cb, s);
	if (s->path == NULL || s->backoff == NULL || s->reaper == NULL || s->refuse_timer == NULL) {
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
	if (limits->group && chown(path, (uid_t)-1, limits->gid) < 0)
		log_warn("ctl", "cannot give %s to group %s", path, limits->group);
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
		client_kill(s->clients);
	if (s->reaper)
		reaper_cb(-1, 0, s);
	if (s->listener) {
		evconnlistener_free(s->listener);
		unlink(s->path);
	}
	if (s->refused_quiet)
		log_warnx("ctl", "%u more clients refused (control.max_clients)", s->refused_quiet);
	if (s->refuse_timer)
		event_free(s->refuse_timer);
	if (s->reaper)
		event_free(s->reaper);
	if (s->backoff)
		event_free(s->backoff);
	free(s->path);
	free(s);
}

void
ctl_server_set_limits(struct ctl_server *s, const struct ctl_server_limits *limits)
{
	s->limits = *limits;
	s->limits.group = NULL;		/* only used while creating the socket */
}

/* One answer that came later is on its way: a client that has closed its
 * side and waits for nothing more is closed once it is written. */
static void
client_answered(struct ctl_client *c)
{
	if (c->peer.pending > 0)
		c->peer.pending--;
	if (c->eof && c->peer.pending == 0 && !c->peer.subscribed)
		c->closing = true;
}

void
ctl_server_send_to(struct ctl_server *s, uint64_t serial, json_t *resp)
{
	for (struct ctl_client *c = s ? s->clients : NULL; c && resp; c = c->next) {
		if (c->peer.serial != serial || c->closing)
			continue;
		client_send(c, resp);
		client_answered(c);
		break;
	}
	/* Gone: the operation went on all the same; claims.list tells. */
	json_decref(resp);
}

void
ctl_server_send_text_to(struct ctl_server *s, uint64_t serial, char *text, size_t len)
{
	for (struct ctl_client *c = s ? s->clients : NULL; c && text; c = c->next) {
		struct evbuffer *out;

		if (c->peer.serial != serial || c->closing || c->dead)
			continue;
		out = bufferevent_get_output(c->bev);
		if (evbuffer_add_reference(out, text, len, free_text_cb, NULL) < 0)
			break;
		text = NULL;		/* the buffer frees it once written */
		evbuffer_add(out, "\n", 1);
		client_answered(c);
		break;
	}
	free(text);
}

void
ctl_server_list_done(struct ctl_server *s, uint64_t serial)
{
	for (struct ctl_client *c = s ? s->clients : NULL; c; c = c->next) {
		if (c->peer.serial != serial)
			continue;
		if (c->peer.lists > 0 && --c->peer.lists == 0 && !c->dead && !c->closing &&
		    !c->paused) {
			/* The lines that waited, from a later loop turn. */
			if (!c->eof)
				bufferevent_enable(c->bev, EV_READ);
			bufferevent_trigger(c->bev, EV_READ,
					    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
		}
		return;
	}
}

bool
ctl_server_serial_alive(const struct ctl_server *s, uint64_t serial)
{
	for (const struct ctl_client *c = s ? s->clients : NULL; c; c = c->next)
		if (c->peer.serial == serial)
			return !c->closing && !c->dead;
	return false;
}

size_t
ctl_server_total_output(const struct ctl_server *s)
{
	return s ? total_output(s) : 0;
}

bool
ctl_server_has_subscribers(const struct ctl_server *s)
{
	return s->nsubscribers > 0;
}

bool
ctl_server_wants_events(void *arg)
{
	return ctl_server_has_subscribers(arg);
}

void
ctl_server_event(void *arg, const struct bus_event *ev)
{
	struct ctl_server *s = arg;
	json_t *note = json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method", "event", "params",
				 (json_t *)ev->params);

	if (note == NULL)
		return;
	s->events_sent++;
	ctl_server_broadcast(s, note, ev->type);
	json_decref(note);
}

uint64_t
ctl_server_events_sent(const struct ctl_server *s)
{
	return s ? s->events_sent : 0;
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
	size_t total = total_output(s), budget = s->limits.max_total_output;
	struct ctl_client *c, *next;
	char *text = NULL;
	size_t len = 0;

	for (c = s->clients; c; c = next) {
		struct evbuffer *out;
		size_t unread;

		next = c->next;
		if (c->closing || !ctl_peer_wants(&c->peer, type))
			continue;
		out = bufferevent_get_output(c->bev);
		unread = evbuffer_get_length(out);
		/* Too far behind; or, while all clients together hold more than
		 * the budget, more than a paused client may hold. */
		if (unread > s->limits.max_output || (total > budget && unread > CTL_OUTPUT_HIGH)) {
			log_warnx("ctl", "subscriber pid %d has %zu bytes unread; disconnecting it%s",
				  (int)c->peer.pid, unread,
				  unread > s->limits.max_output ? "" : " (control.max_total_output_bytes)");
			total -= unread;
			client_kill(c);	/* it may be the client being answered */
			continue;
		}
		if (text == NULL) {
			text = json_dumps(note, JSON_COMPACT);
			if (text == NULL)
				return;
			len = strlen(text);
		}
		evbuffer_add(out, text, len);
		evbuffer_add(out, "\n", 1);
		total += len + 1;
	}
	free(text);
}
