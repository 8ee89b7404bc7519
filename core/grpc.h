/* SPDX-License-Identifier: MIT */
/* gRPC over HTTP/2 (nghttp2), driven by bytes in and out: no sockets, no libevent. */
#ifndef HOSTDEVD_GRPC_H
#define HOSTDEVD_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum grpc_status {
	GRPC_STATUS_OK = 0,
	GRPC_STATUS_CANCELLED = 1,
	GRPC_STATUS_UNKNOWN = 2,
	GRPC_STATUS_INVALID_ARGUMENT = 3,
	GRPC_STATUS_DEADLINE_EXCEEDED = 4,
	GRPC_STATUS_NOT_FOUND = 5,
	GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
	GRPC_STATUS_FAILED_PRECONDITION = 9,
	GRPC_STATUS_UNIMPLEMENTED = 12,
	GRPC_STATUS_INTERNAL = 13,
	GRPC_STATUS_UNAVAILABLE = 14,
};

/* Largest request or response message we take (the length prefix is
 * checked before any of the body is buffered). */
#define GRPC_MAX_MESSAGE (1024 * 1024)
/* Most request bytes one connection may hold buffered at once. */
#define GRPC_MAX_CONN_INPUT (4 * 1024 * 1024)
/* Bodies this large are mapped, not taken from the heap: their memory goes
 * back to the system when the call ends. */
#define GRPC_MMAP_MIN (64 * 1024)
/* SETTINGS_MAX_CONCURRENT_STREAMS we announce. */
#define GRPC_MAX_STREAMS 256

struct grpc_conn;
struct grpc_call;

/* Request bytes buffered by every server connection that shares it
 * (grpc_conn_set_budget); a request that would pass `max` is refused with
 * RESOURCE_EXHAUSTED. */
struct grpc_budget {
	size_t used, max;
};

struct grpc_conn_ops {
	/* Bytes for the peer (always called from grpc_conn_flush). */
	void (*write)(void *arg, const uint8_t *data, size_t len);
	/* Server: a complete request for a known method; answer with
	 * grpc_call_send/grpc_call_finish now or later. */
	void (*request)(void *arg, struct grpc_call *call, const char *path, const uint8_t *msg,
			size_t len);
	/* Server: the call is gone (peer reset, connection closed) before
	 * the handler finished it; the handler must drop its pointer. */
	void (*call_closed)(void *arg, struct grpc_call *call);
	/* Client: the call ended; msg is the response message or NULL. */
	void (*response)(void *arg, struct grpc_call *call, int status, const char *message,
			 const uint8_t *msg, size_t len);
	/* Server: whether `path` is a method it serves. */
	bool (*known_path)(void *arg, const char *path);
};

/* A server connection: our SETTINGS go out first. Returns 0 or -ENOMEM. */
int grpc_conn_new_server(const struct grpc_conn_ops *ops, void *arg, struct grpc_conn **ret);
/* A client connection (prior knowledge, "localhost" authority). */
int grpc_conn_new_client(const struct grpc_conn_ops *ops, void *arg, struct grpc_conn **ret);
/* Frees the connection; calls call_closed for server calls still open. */
void grpc_conn_free(struct grpc_conn *c);
/* Server: counts this connection's request bytes against `b` too (which
 * must outlive it). */
void grpc_conn_set_budget(struct grpc_conn *c, struct grpc_budget *b);
/* Server: whether the client's preface and first SETTINGS have arrived. */
bool grpc_conn_established(const struct grpc_conn *c);
/* Server: ends with DEADLINE_EXCEEDED each request whose body has been
 * arriving for `max_ms` or more, and frees what it buffered. Returns how
 * many ended; flush afterwards. */
int grpc_conn_expire_requests(struct grpc_conn *c, int max_ms);
/* Request bytes this connection holds buffered. */
size_t grpc_conn_buffered(const struct grpc_conn *c);

/* Feeds bytes from the peer. Returns 0, or -EPROTO when the connection is
 * beyond repair (bad preface, framing error): flush, then close it. */
int grpc_conn_recv(struct grpc_conn *c, const uint8_t *data, size_t len);
/* Hands pending frames to ops->write, up to about `budget` bytes. Returns
 * true when more is waiting. */
bool grpc_conn_flush(struct grpc_conn *c, size_t budget);
/* True when the session is over (GOAWAY both ways or a fatal error) and
 * everything has been flushed. */
bool grpc_conn_done(const struct grpc_conn *c);
/* Graceful end: GOAWAY(NO_ERROR); open calls are finished by the caller. */
void grpc_conn_shutdown(struct grpc_conn *c);
int grpc_conn_open_calls(const struct grpc_conn *c);

/* Client: starts a unary call. Returns the call or NULL. */
struct grpc_call *grpc_conn_call(struct grpc_conn *c, const char *path, const uint8_t *msg,
				 size_t len);

/* Server: queues a response message (response headers go first). With
 * `latest_only`, a message queued earlier that has not started to go out is
 * replaced, so a slow reader of a stream costs at most two messages.
 * Returns 0 or -errno. */
int grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len, bool latest_only);
/* Server: ends the call with a status (trailers, or Trailers-Only when
 * nothing was sent). The call must not be used afterwards. */
int grpc_call_finish(struct grpc_call *call, int status, const char *message);
void grpc_call_set_data(struct grpc_call *call, void *data);
void *grpc_call_get_data(const struct grpc_call *call);
/* Bytes queued on this call that the peer has not taken yet. */
size_t grpc_call_pending(const struct grpc_call *call);

/* Percent-encodes a grpc-message value (RFC 3986 unreserved and most
 * printable ASCII stay; others become %XX). Returns a new string. */
char *grpc_percent_encode(const char *s);
char *grpc_percent_decode(const char *s);
const char *grpc_status_to_string(int status);

#endif
