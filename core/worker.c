/* SPDX-License-Identifier: MIT */
/* The worker process: kernel writes that may sleep, modprobe, waiting for a
 * device to be let go. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsroot.h"
#include "log.h"
#include "metrics.h"
#include "module.h"
#include "worker.h"

#define MSG_MAX 65536

struct op {
	uint64_t id;
	json_t *req;
	int timeout_ms;
	worker_cb cb;
	void *arg;
	struct op *next;
};

struct worker {
	struct event_base *base;
	char *sysfs_root, *dev_root;
	pid_t pid;
	int sock;
	struct event *ev;
	struct event *timer;
	struct event *sigchld;		/* reaps a replaced worker once it is gone */
	struct op *current;
	struct op *head, *tail;
	uint64_t next_id;
	unsigned restarts;
};

/* --- the worker's side -------------------------------------------------- */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
op_write(int sysfs_fd, const char *path, const char *value)
{
	struct open_how how = { .flags = O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
	size_t len = strlen(value);
	ssize_t n;
	int fd;

	/* No O_CREAT: sysfs attributes exist or the write is wrong (O_TRUNC is
	 * a no-op on sysfs and keeps simulated trees honest). */
	/* EAGAIN: a rename or mount anywhere on the system raced the
	 * RESOLVE_BENEATH walk (openat2(2)); the kernel asks for a retry. */
	for (int tries = 0; tries < 64; tries++) {
		fd = (int)syscall(SYS_openat2, sysfs_fd, path, &how, sizeof(how));
		if (fd >= 0 || errno != EAGAIN)
			break;
	}
	if (fd < 0 && errno == ENOSYS)
		fd = openat(sysfs_fd, path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	do {
		n = write(fd, value, len);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (close(fd) < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

static int
run(const char *prog, char *const argv[])
{
	static const char *const dirs[] = { "/usr/sbin", "/usr/bin", "/sbin", "/bin" };
	char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
	char path[256] = "";
	pid_t pid;
	int status;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && path[0] == '\0'; i++) {
		snprintf(path, sizeof(path), "%s/%s", dirs[i], prog);
		if (access(path, X_OK) < 0)
			path[0] = '\0';
	}
	if (path[0] == '\0')
		return -ENOENT;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		/* A scrubbed environment: nothing of the daemon's leaks in. */
		execve(path, argv, envp);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 127 ? -ENOENT : -EIO;
}

static bool
matches(const char *target, const json_t *paths, const json_t *prefixes)
{
	size_t i;
	json_t *v;

	json_array_foreach(paths, i, v)
		if (json_is_string(v) && strcmp(target, json_string_value(v)) == 0)
			return true;
	json_array_foreach(prefixes, i, v) {
		const char *p = json_string_value(v);
		size_t n = p ? strlen(p) : 0;

		/* "/dev/gpu" matches gpu0, gpuctl, gpu-uvm... */
		if (n && strncmp(target, p, n) == 0 && strchr(target + n, '/') == NULL)
			return true;
	}
	return false;
}

/* Processes holding any of the paths open: the links in /proc/PID/fd. */
static json_t *
scan_holders(const json_t *paths, const json_t *prefixes)
{
	json_t *out = json_array();
	char root[4096];
	DIR *proc = proc_path(root, sizeof(root), "") ? NULL : opendir(root);
	struct dirent *de;
	pid_t self = getpid(), parent = getppid();

	if (proc == NULL)
		return out;
	while ((de = readdir(proc)) != NULL) {
		char fddir[4200], link[4300], target[4096], comm[64] = "";
		pid_t pid;
		DIR *fds;
		struct dirent *fe;
		FILE *f;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = (pid_t)atoi(de->d_name);
		if (pid == self || pid == parent)
			continue;
		snprintf(fddir, sizeof(fddir), "%s/%d/fd", root, (int)pid);
		fds = opendir(fddir);
		if (fds == NULL)
			continue;
		while ((fe = readdir(fds)) != NULL) {
			ssize_t n;

			if (fe->d_name[0] == '.')
				continue;
			snprintf(link, sizeof(link), "%s/%s", fddir, fe->d_name);
			n = readlink(link, target, sizeof(target) - 1);
			if (n <= 0)
				continue;
			target[n] = '\0';
			if (!matches(target, paths, prefixes))
				continue;
			snprintf(link, sizeof(link), "%s/%d/comm", root, (int)pid);
			f = fopen(link, "re");
			if (f) {
				if (fgets(comm, sizeof(comm), f) == NULL)
					comm[0] = '\0';
				comm[strcspn(comm, "\n")] = '\0';
				fclose(f);
			}
			json_array_append_new(out, json_pack("{s:i, s:s, s:s}", "pid", (int)pid, "comm",
							     comm, "path", target));
			break;
		}
		closedir(fds);
	}
	closedir(proc);
	return out;
}

/* Module files this worker has opened; never closed (the worker is
 * replaced, not cleaned). */
struct loaded {
	char *path;
	const struct hdd_module *desc;
};
static struct loaded *loaded;
static size_t nloaded;

/* The descriptor of the module at `path`, named `name`: loaded once, with
 * the loader's file checks and the same ABI major. Only a path the daemon
 * sent, which it loaded itself after the same checks. */
static const struct hdd_module *
module_open(const char *path, const char *name)
{
	const struct hdd_module *desc;
	struct loaded *v;
	char why[256];
	void *h;

	for (size_t i = 0; i < nloaded; i++)
		if (strcmp(loaded[i].path, path) == 0)
			return strcmp(loaded[i].desc->name, name) == 0 ? loaded[i].desc : NULL;
	if (path[0] != '/' || module_file_check(path, why, sizeof(why)) < 0)
		return NULL;
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	desc = h ? dlsym(h, HDD_MODULE_SYMBOL) : NULL;
	if (desc == NULL || desc->abi_major != HDD_MODULE_ABI_MAJOR ||
	    desc->size < offsetof(struct hdd_module, worker_ops) + sizeof(desc->worker_ops) ||
	    desc->name == NULL || strcmp(desc->name, name) != 0) {
		if (h)
			dlclose(h);
		return NULL;
	}
	v = realloc(loaded, (nloaded + 1) * sizeof(*v));
	if (v == NULL)
		return NULL;
	loaded = v;
	loaded[nloaded].path = strdup(path);
	if (loaded[nloaded].path == NULL)
		return NULL;
	loaded[nloaded++].desc = desc;
	return desc;
}

/* {"op":"module", "path", "module", "name", "args"}: a module's worker op. */
static int
op_module(int sysfs_fd, const json_t *req, json_t *reply)
{
	const char *path = json_string_value(json_object_get(req, "path"));
	const char *mod = json_string_value(json_object_get(req, "module"));
	const char *name = json_string_value(json_object_get(req, "name"));
	const json_t *args = json_object_get(req, "args");
	const struct hdd_module *desc;
	json_t *out;
	int result = -ENOENT;

	if (path == NULL || mod == NULL || name == NULL)
		return -EINVAL;
	desc = module_open(path, mod);
	if (desc == NULL)
		return -ENOENT;
	out = json_object();
	if (out == NULL)
		return -ENOMEM;
	for (const struct hdd_worker_op *w = desc->worker_ops; w && w->name; w++) {
		if (strcmp(w->name, name) == 0) {
			result = w->run ? w->run(sysfs_fd, args, out) : -ENOSYS;
			break;
		}
	}
	json_object_set_new(reply, "out", out);
	return result;
}

json_t *
worker_handle(int sysfs_fd, const char *dev_root, const json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	json_t *reply = json_object();
	int64_t t0 = now_ms();
	int result = -EINVAL;

	if (op == NULL) {
		/* fall through with -EINVAL */
	} else if (strcmp(op, "write") == 0) {
		const char *path = json_string_value(json_object_get(req, "path"));
		const char *value = json_string_value(json_object_get(req, "value"));

		if (path && value)
			result = op_write(sysfs_fd, path, value);
	} else if (strcmp(op, "modprobe") == 0) {
		const char *mod = json_string_value(json_object_get(req, "module"));

		if (mod && mod[0] != '-') {
			char *argv[] = { "modprobe", "-q", "--", (char *)mod, NULL };
			result = run("modprobe", argv);
		}
	} else if (strcmp(op, "holders") == 0 || strcmp(op, "wait_free") == 0) {
		const json_t *paths = json_object_get(req, "paths");
		const json_t *prefixes = json_object_get(req, "prefixes");
		int64_t limit = json_integer_value(json_object_get(req, "timeout_ms"));
		json_t *h = scan_holders(paths, prefixes);

		/* wait_free: poll until nobody holds them or the time is up. */
		while (strcmp(op, "wait_free") == 0 && json_array_size(h) > 0 &&
		       now_ms() - t0 < limit) {
			struct timespec ts = { 0, 200 * 1000000L };

			nanosleep(&ts, NULL);
			json_decref(h);
			h = scan_holders(paths, prefixes);
		}
		result = 0;
		json_object_set_new(reply, "holders", h);
	} else if (strcmp(op, "module") == 0) {
		result = op_module(sysfs_fd, req, reply);
	}
	json_object_set(reply, "id", json_object_get(req, "id"));
	json_object_set_new(reply, "result", json_integer(result));
	json_object_set_new(reply, "elapsed_ms", json_integer(now_ms() - t0));
	(void)dev_root;
	return reply;
}

void
worker_main(int sock, int sysfs_fd, const char *dev_root)
{
	static char buf[MSG_MAX];

	/* Executed as /proc/self/exe, it would show up as "exe" in ps. */
	prctl(PR_SET_NAME, "hostdevd-worker", 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);	/* run() waits for its own children */
	for (;;) {
		ssize_t n = recv(sock, buf, sizeof(buf) - 1, 0);
		json_t *req, *reply;
		char *text;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0);
		req = json_loadb(buf, (size_t)n, 0, NULL);
		reply = req ? worker_handle(sysfs_fd, dev_root, req)
			    : json_pack("{s:i}", "result", -EINVAL);
		json_decref(req);
		text = json_dumps(reply, JSON_COMPACT);
		json_decref(reply);
		if (text == NULL || send(sock, text, strlen(text), MSG_NOSIGNAL) < 0)
			_exit(1);
		free(text);
	}
}

/* --- the daemon's side -------------------------------------------------- */

static void worker_read_cb(evutil_socket_t fd, short what, void *arg);
static void worker_timer_cb(evutil_socket_t fd, short what, void *arg);
static void worker_sigchld_cb(evutil_socket_t fd, short what, void *arg);

/* Closes every descriptor from `from` up: one close_range(2) instead of a
 * close(2) per possible descriptor (20,000 and more under a raised limit). */
static void
close_from(int from)
{
	struct rlimit rl;
	long max = 65536;

#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0)
		return;
#endif
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		max = (long)rl.rlim_cur;
	for (long fd = from; fd < max; fd++)
		close((int)fd);
}

/* The child between fork and exec: the socket and the sysfs root go to
 * their fixed numbers, everything else of the daemon is closed, then the
 * daemon's own binary starts over in worker mode, so the worker carries
 * none of the daemon's memory (inventory, names, buffers) copy-on-write. */
static void __attribute__((noreturn))
worker_child(int sock, int sysfs_fd, const char *dev_root)
{
	char sock_arg[16], sysfs_arg[16];
	char *argv[] = { "hostdevd", "--worker-fd", sock_arg, "--worker-sysfs-fd", sysfs_arg,
			 "--dev-root", (char *)dev_root, NULL };
	sigset_t none;

	if (sysfs_fd == WORKER_SOCK_FD)
		sysfs_fd = fcntl(sysfs_fd, F_DUPFD, WORKER_SYSFS_FD + 1);
	if (sysfs_fd < 0 ||
	    (sock != WORKER_SOCK_FD && dup2(sock, WORKER_SOCK_FD) < 0) ||
	    (sysfs_fd != WORKER_SYSFS_FD && dup2(sysfs_fd, WORKER_SYSFS_FD) < 0))
		_exit(127);
	/* dup2 clears close-on-exec; a descriptor already in place keeps it. */
	fcntl(WORKER_SOCK_FD, F_SETFD, 0);
	fcntl(WORKER_SYSFS_FD, F_SETFD, 0);
	close_from(WORKER_SYSFS_FD + 1);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	snprintf(sock_arg, sizeof(sock_arg), "%d", WORKER_SOCK_FD);
	snprintf(sysfs_arg, sizeof(sysfs_arg), "%d", WORKER_SYSFS_FD);
	/* /proc/self/exe is the running binary even after a package upgrade
	 * replaced the file: the worker always speaks this daemon's protocol. */
	execv("/proc/self/exe", argv);
	/* No /proc: the worker works as a plain copy, only bigger. */
	log_warn("worker", "cannot execute /proc/self/exe; running the worker in a copy of the daemon");
	worker_main(WORKER_SOCK_FD, WORKER_SYSFS_FD, dev_root);
}

static int
spawn(struct worker *w)
{
	int sv[2], sysfs_fd;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	sysfs_fd = open(w->sysfs_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sysfs_fd < 0) {
		int err = -errno;
		close(sv[0]);
		close(sv[1]);
		return err;
	}
	pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(sv[0]);
		close(sv[1]);
		close(sysfs_fd);
		return err;
	}
	if (pid == 0)
		worker_child(sv[1], sysfs_fd, w->dev_root);
	close(sv[1]);
	close(sysfs_fd);
	w->pid = pid;
	w->sock = sv[0];
	w->ev = event_new(w->base, w->sock, EV_READ | EV_PERSIST, worker_read_cb, w);
	if (w->ev == NULL || event_add(w->ev, NULL) < 0)
		return -ENOMEM;
	log_debug("worker", "started (pid %d)", (int)pid);
	return 0;
}

static void
reap(struct worker *w)
{
	/* A worker stuck in the kernel (uninterruptible sleep) may linger
	 * until the kernel lets go; collect whatever has exited. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	(void)w;
}

static void
close_current_worker(struct worker *w, bool kill_it)
{
	if (w->ev) {
		event_free(w->ev);
		w->ev = NULL;
	}
	if (w->sock >= 0) {
		close(w->sock);
		w->sock = -1;
	}
	if (w->pid > 0 && kill_it)
		kill(w->pid, SIGKILL);
	w->pid = -1;
	reap(w);
}

static void send_next(struct worker *w);

static void
finish_current(struct worker *w, int result, const json_t *reply)
{
	struct op *op = w->current;

	w->current = NULL;
	evtimer_del(w->timer);
	if (op) {
		metrics_count(result < 0 ? METRICS_WORKER_FAILURES : METRICS_WORKER_JOBS);
		if (op->cb)
			op->cb(op->arg, result, reply);
		json_decref(op->req);
		free(op);
	}
	send_next(w);
}

static void
restart(struct worker *w, const char *why)
{
	log_warnx("worker", "%s; starting a new worker", why);
	close_current_worker(w, true);
	w->restarts++;
	if (spawn(w) < 0)
		log_err("worker", "cannot start a new worker");
}

static void
send_next(struct worker *w)
{
	struct timeval tv;
	char *text;

	while (w->current == NULL && w->head) {
		struct op *op = w->head;

		w->head = op->next;
		if (w->head == NULL)
			w->tail = NULL;
		w->current = op;
		if (w->sock < 0)
			restart(w, "no worker");
		text = json_dumps(op->req, JSON_COMPACT);
		if (text == NULL || w->sock < 0 || strlen(text) >= MSG_MAX ||
		    send(w->sock, text, strlen(text), MSG_NOSIGNAL) < 0) {
			free(text);
			w->current = NULL;
			if (op->cb)
				op->cb(op->arg, -EPIPE, NULL);
			json_decref(op->req);
			free(op);
			continue;
		}
		free(text);
		tv.tv_sec = op->timeout_ms / 1000;
		tv.tv_usec = (op->timeout_ms % 1000) * 1000;
		evtimer_add(w->timer, &tv);
	}
}

static void
worker_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	static char buf[MSG_MAX];
	ssize_t n = recv(w->sock, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	json_t *reply;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (w->current == NULL) {
			/* Idle: the next operation starts a new worker (send_next),
			 * so one that dies at start cannot make the daemon spin. */
			log_warnx("worker", "the worker (pid %d) went away; a new one starts with the next operation",
				  (int)w->pid);
			close_current_worker(w, false);
			return;
		}
		restart(w, "the worker went away");
		finish_current(w, -EPIPE, NULL);
		return;
	}
	reply = json_loadb(buf, (size_t)n, 0, NULL);
	if (reply == NULL || w->current == NULL ||
	    (uint64_t)json_integer_value(json_object_get(reply, "id")) != w->current->id) {
		json_decref(reply);
		return;		/* a late answer for an operation already timed out */
	}
	finish_current(w, (int)json_integer_value(json_object_get(reply, "result")), reply);
	json_decref(reply);
}

static void
worker_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	char why[160];

	snprintf(why, sizeof(why), "operation %s did not finish within %d ms",
		 w->current ? json_string_value(json_object_get(w->current->req, "op")) : "?",
		 w->current ? w->current->timeout_ms : 0);
	metrics_count(METRICS_WORKER_TIMEOUTS);
	restart(w, why);
	finish_current(w, -ETIMEDOUT, NULL);
}

/* A worker killed after a deadline exits when the kernel lets it go, maybe
 * long after: collect it then, so no zombie lingers. */
static void
worker_sigchld_cb(evutil_socket_t fd, short what, void *arg)
{
	reap(arg);
}

int
worker_new(struct event_base *base, const char *sysfs_root, const char *dev_root,
	   struct worker **ret)
{
	struct worker *w = calloc(1, sizeof(*w));
	int err;

	if (w == NULL)
		return -ENOMEM;
	w->base = base;
	w->sock = -1;
	w->pid = -1;
	w->next_id = 1;
	w->sysfs_root = strdup(sysfs_root);
	w->dev_root = strdup(dev_root);
	w->timer = evtimer_new(base, worker_timer_cb, w);
	w->sigchld = evsignal_new(base, SIGCHLD, worker_sigchld_cb, w);
	if (!w->sysfs_root || !w->dev_root || !w->timer || !w->sigchld ||
	    event_add(w->sigchld, NULL) < 0) {
		worker_free(w);
		return -ENOMEM;
	}
	err = spawn(w);
	if (err < 0) {
		worker_free(w);
		return err;
	}
	*ret = w;
	return 0;
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	while (w->head) {
		struct op *op = w->head;

		w->head = op->next;
		json_decref(op->req);
		free(op);
	}
	if (w->current) {
		json_decref(w->current->req);
		free(w->current);
	}
	/* Closing the socket ends an idle worker; one stuck in the kernel is
	 * left to finish on its own. */
	close_current_worker(w, false);
	if (w->timer)
		event_free(w->timer);
	if (w->sigchld)
		event_free(w->sigchld);
	free(w->sysfs_root);
	free(w->dev_root);
	free(w);
}

int
worker_submit(struct worker *w, json_t *req, int timeout_ms, worker_cb cb, void *arg)
{
	struct op *op = calloc(1, sizeof(*op));

	if (op == NULL || req == NULL) {
		free(op);
		json_decref(req);
		return -ENOMEM;
	}
	op->id = w->next_id++;
	json_object_set_new(req, "id", json_integer((json_int_t)op->id));
	op->req = req;
	op->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
	op->cb = cb;
	op->arg = arg;
	if (w->tail)
		w->tail->next = op;
	else
		w->head = op;
	w->tail = op;
	send_next(w);
	return 0;
}

void
worker_forget(struct worker *w, void *arg)
{
	if (w->current && w->current->arg == arg)
		w->current->cb = NULL;
	for (struct op *op = w->head; op; op = op->next)
		if (op->arg == arg)
			op->cb = NULL;
}

int
worker_pid(const struct worker *w)
{
	return (int)w->pid;
}

unsigned
worker_restarts(const struct worker *w)
{
	return w->restarts;
}
