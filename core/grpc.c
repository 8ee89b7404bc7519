/* SPDX-License-Identifier: MIT */
/* gRPC over HTTP/2 (nghttp2), driven by bytes in and out: no sockets, no libevent. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "grpc.h"
#include "log.h"

#define GRPC_PREFIX 5

struct grpc_call {
	struct grpc_conn *conn;
	int32_t stream_id;
	struct grpc_call *next, *prev;
	char path[128];
	bool ct_ok;			/* content-type application/grpc... */
	bool method_ok;			/* :method POST */
	bool answered;			/* server answered before the request ended */
	bool request_done;		/* END_STREAM received */
	bool headers_sent;
	bool finishing;			/* trailers wanted after the data */
	bool finished;			/* trailers submitted */
	bool ignore_body;		/* error already sent: drop further DATA */
	bool closed;			/* nghttp2 closed the stream */
	bool client;
	int status;
	char *status_msg;
	int64_t started_ms;		/* server: when the request began */
	/* request body (server) or response body (client); `expect` is the
	 * framed length once the prefix is in (0 before) */
	uint8_t *in;
	size_t in_len, in_cap, expect;
	/* outgoing message bytes: `out` is going, `next_msg` waits */
	uint8_t *out;
	size_t out_len, out_off;
	uint8_t *next_msg;
	size_t next_len;
	/* client: what came back */
	int http_status;
	int resp_status;
	char *resp_msg;
	void *data;
};

struct grpc_conn {
	nghttp2_session *h2;
	const struct grpc_conn_ops *ops;
	void *arg;
	bool server;
	bool fatal;
	bool established;		/* the client's SETTINGS arrived */
	size_t input;			/* request bytes buffered across calls */
	struct grpc_budget *budget;	/* shared with other connections, or NULL */
	struct grpc_call *calls;
	int ncalls;
};

static const char *const status_names[] = {
	[0] = "OK", [1] = "CANCELLED", [2] = "UNKNOWN", [3] = "INVALID_ARGUMENT",
	[4] = "DEADLINE_EXCEEDED", [5] = "NOT_FOUND", [6] = "ALREADY_EXISTS",
	[7] = "PERMISSION_DENIED", [8] = "RESOURCE_EXHAUSTED", [9] = "FAILED_PRECONDITION",
	[10] = "ABORTED", [11] = "OUT_OF_RANGE", [12] = "UNIMPLEMENTED", [13] = "INTERNAL",
	[14] = "UNAVAILABLE", [15] = "DATA_LOSS", [16] = "UNAUTHENTICATED",
};

const char *
grpc_status_to_string(int status)
{
	if (status < 0 || status > 16)
		return "INVALID";
	return status_names[status];
}

char *
grpc_percent_encode(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(n * 3 + 1), *p = out;

	if (out == NULL)
		return NULL;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c >= 0x20 && *c <= 0x7e && *c != '%') {
			*p++ = (char)*c;
		} else {
			snprintf(p, 4, "%%%02X", *c);
			p += 3;
		}
	}
	*p = '\0';
	return out;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

char *
grpc_percent_decode(const char *s)
{
	char *out = malloc(strlen(s) + 1), *p = out;

	if (out == NULL)
		return NULL;
	while (*s) {
		int hi, lo;

		if (s[0] == '%' && (hi = hexval(s[1])) >= 0 && (lo = hexval(s[2])) >= 0) {
			*p++ = (char)(hi * 16 + lo);
			s += 3;
		} else {
			*p++ = *s++;
		}
	}
	*p = '\0';
	return out;
}

/* --- calls ------------------------------------------------------------- */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Bodies: small ones from the heap, large ones mapped, so a connection that
 * held megabytes gives them back when it goes (a heap keeps them). */
static uint8_t *
body_alloc(size_t n)
{
	void *p;

	if (n < GRPC_MMAP_MIN)
		return malloc(n);
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void
body_free(uint8_t *p, size_t cap)
{
	if (p == NULL)
		return;
	if (cap < GRPC_MMAP_MIN)
		free(p);
	else
		munmap(p, cap);
}

/* Room for `need` bytes of body: exactly the framed length when it is
 * known, else doubling. */
static int
body_reserve(struct grpc_call *call, size_t need)
{
	size_t cap = call->in_cap ? call->in_cap : 256;
	uint8_t *p;

	if (need <= call->in_cap)
		return 0;
	if (call->expect >= need)
		cap = call->expect;
	while (cap < need)
		cap *= 2;
	p = body_alloc(cap);
	if (p == NULL)
		return -ENOMEM;
	if (call->in_len)
		memcpy(p, call->in, call->in_len);
	body_free(call->in, call->in_cap);
	call->in = p;
	call->in_cap = cap;
	return 0;
}

/* Drops what a call buffered (its body is of no more use). */
static void
body_release(struct grpc_call *call)
{
	struct grpc_conn *c = call->conn;

	c->input -= call->in_len;
	if (c->budget && !call->client)
		c->budget->used -= call->in_len;
	body_free(call->in, call->in_cap);
	call->in = NULL;
	call->in_len = call->in_cap = 0;
}

static struct grpc_call *
call_new(struct grpc_conn *c, int32_t stream_id)
{
	struct grpc_call *call = calloc(1, sizeof(*call));

	if (call == NULL)
		return NULL;
	call->conn = c;
	call->stream_id = stream_id;
	call->started_ms = now_ms();
	call->next = c->calls;
	if (c->calls)
		c->calls->prev = call;
	c->calls = call;
	c->ncalls++;
	return call;
}

static void
call_free(struct grpc_call *call)
{
	struct grpc_conn *c = call->conn;

	if (call->prev)
		call->prev->next = call->next;
	else
		c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	c->ncalls--;
	body_release(call);
	free(call->out);
	free(call->next_msg);
	free(call->status_msg);
	free(call->resp_msg);
	free(call);
}

void
grpc_call_set_data(struct grpc_call *call, void *data)
{
	call->data = data;
}

void *
grpc_call_get_data(const struct grpc_call *call)
{
	return call->data;
}

size_t
grpc_call_pending(const struct grpc_call *call)
{
	return (call->out_len - call->out_off) + call->next_len;
}

int
grpc_conn_open_calls(const struct grpc_conn *c)
{
	return c->ncalls;
}

#define NV(name, value) { (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, \
			  strlen(value), NGHTTP2_NV_FLAG_NONE }

/* Data source for responses (and client requests): the current message,
 * then the next; EOF with trailers once finishing and drained. */
static ssize_t
data_read_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
	     uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct grpc_call *call = source->ptr;
	size_t n;

	if (call->out_off == call->out_len && call->next_msg) {
		free(call->out);
		call->out = call->next_msg;
		call->out_len = call->next_len;
		call->out_off = 0;
		call->next_msg = NULL;
		call->next_len = 0;
	}
	n = call->out_len - call->out_off;
	if (n > 0) {
		if (n > length)
			n = length;
		memcpy(buf, call->out + call->out_off, n);
		call->out_off += n;
		return (ssize_t)n;
	}
	if (call->client) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	if (!call->finishing)
		return NGHTTP2_ERR_DEFERRED;
	/* Drained and finishing: end the DATA without END_STREAM; the
	 * trailers carry it. */
	*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
	{
		char code[16];
		char *enc = call->status_msg ? grpc_percent_encode(call->status_msg) : NULL;
		size_t nt = 1;

		snprintf(code, sizeof(code), "%d", call->status);
		nghttp2_nv trailers[2] = { NV("grpc-status", code) };

		if (enc && enc[0]) {
			nghttp2_nv m = NV("grpc-message", enc);
			trailers[nt++] = m;
		}
		if (nghttp2_submit_trailer(h2, stream_id, trailers, nt) != 0)
			log_debug("grpc", "stream %d: cannot submit trailers", stream_id);
		free(enc);
		call->finished = true;
	}
	return 0;
}

static int
submit_headers(struct grpc_call *call)
{
	nghttp2_nv hdrs[] = {
		NV(":status", "200"),
		NV("content-type", "application/grpc"),
	};
	nghttp2_data_provider dp = { .source.ptr = call, .read_callback = data_read_cb };
	int rv;

	rv = nghttp2_submit_response(call->conn->h2, call->stream_id, hdrs, 2, &dp);
	if (rv != 0)
		return -EIO;
	call->headers_sent = true;
	return 0;
}

static uint8_t *
frame_message(const uint8_t *msg, size_t len)
{
	uint8_t *buf = malloc(len + GRPC_PREFIX);

	if (buf == NULL)
		return NULL;
	buf[0] = 0;
	buf[1] = (uint8_t)(len >> 24);
	buf[2] = (uint8_t)(len >> 16);
	buf[3] = (uint8_t)(len >> 8);
	buf[4] = (uint8_t)len;
	if (len)
		memcpy(buf + GRPC_PREFIX, msg, len);
	return buf;
}

int
grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len, bool latest_only)
{
	uint8_t *framed;

	if (call->closed || call->finishing || call->finished)
		return -EPIPE;
	if (len > GRPC_MAX_MESSAGE)
		return -EMSGSIZE;
	framed = frame_message(msg, len);
	if (framed == NULL)
		return -ENOMEM;
	if (call->out_off == call->out_len && call->next_msg == NULL) {
		free(call->out);
		call->out = framed;
		call->out_len = len + GRPC_PREFIX;
		call->out_off = 0;
	} else if (call->next_msg == NULL || latest_only) {
		free(call->next_msg);
		call->next_msg = framed;
		call->next_len = len + GRPC_PREFIX;
	} else {
		/* Append to the waiting message. */
		uint8_t *grown = realloc(call->next_msg, call->next_len + len + GRPC_PREFIX);

		if (grown == NULL) {
			free(framed);
			return -ENOMEM;
		}
		memcpy(grown + call->next_len, framed, len + GRPC_PREFIX);
		call->next_msg = grown;
		call->next_len += len + GRPC_PREFIX;
		free(framed);
	}
	if (!call->headers_sent)
		return submit_headers(call);
	nghttp2_session_resume_data(call->conn->h2, call->stream_id);
	return 0;
}

int
grpc_call_finish(struct grpc_call *call, int status, const char *message)
{
	struct grpc_conn *c = call->conn;

	if (call->closed) {
		call->data = NULL;
		return -EPIPE;
	}
	if (call->finishing || call->finished)
		return -EALREADY;
	call->status = status;
	free(call->status_msg);
	call->status_msg = message ? strdup(message) : NULL;
	call->finishing = true;
	call->data = NULL;
	if (!call->request_done)
		call->answered = true;
	if (!call->headers_sent && call->out_len == 0) {
		/* Trailers-Only: one HEADERS frame with END_STREAM. */
		char code[16];
		char *enc = message ? grpc_percent_encode(message) : NULL;
		size_t n = 3;
		int rv;

		/* The code is written before NV() takes its length. */
		snprintf(code, sizeof(code), "%d", status);
		nghttp2_nv hdrs[4] = {
			NV(":status", "200"),
			NV("content-type", "application/grpc"),
			NV("grpc-status", code),
		};
		if (enc && enc[0]) {
			nghttp2_nv m = NV("grpc-message", enc);
			hdrs[n++] = m;
		}
		rv = nghttp2_submit_response(c->h2, call->stream_id, hdrs, n, NULL);
		free(enc);
		call->headers_sent = true;
		call->finished = true;
		return rv == 0 ? 0 : -EIO;
	}
	if (!call->headers_sent)
		return submit_headers(call);
	nghttp2_session_resume_data(c->h2, call->stream_id);
	return 0;
}

/* An HTTP-level refusal (415 for a non-gRPC content-type). */
static void
reply_http(struct grpc_call *call, const char *status)
{
	nghttp2_nv hdrs[] = { NV(":status", status) };

	nghttp2_submit_response(call->conn->h2, call->stream_id, hdrs, 1, NULL);
	call->headers_sent = call->finishing = call->finished = true;
	call->ignore_body = true;
	body_release(call);
	if (!call->request_done)
		call->answered = true;
}

static void
reply_error(struct grpc_call *call, int status, const char *msg)
{
	call->ignore_body = true;
	body_release(call);
	grpc_call_finish(call, status, msg);
}

/* --- nghttp2 callbacks -------------------------------------------------- */

static int
on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *c = user_data;
	struct grpc_call *call;

	if (!c->server || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	call = call_new(c, frame->hd.stream_id);
	if (call == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, call);
	return 0;
}

static int
on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
	  const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	struct grpc_call *call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);

	if (call == NULL || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (!call->client) {
		if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
			size_t n = valuelen < sizeof(call->path) - 1 ? valuelen : sizeof(call->path) - 1;
			memcpy(call->path, value, n);
			call->path[n] = '\0';
		} else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
			call->method_ok = valuelen == 4 && memcmp(value, "POST", 4) == 0;
		} else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
			call->ct_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
				      (valuelen == 16 || value[16] == '+' || value[16] == ';');
		}
		return 0;
	}
	if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
		call->http_status = atoi((const char *)value);
	} else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
		char buf[16];
		size_t n = valuelen < sizeof(buf) - 1 ? valuelen : sizeof(buf) - 1;

		memcpy(buf, value, n);
		buf[n] = '\0';
		call->resp_status = atoi(buf);
	} else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
		char *raw = strndup((const char *)value, valuelen);

		free(call->resp_msg);
		call->resp_msg = raw ? grpc_percent_decode(raw) : NULL;
		free(raw);
	}
	return 0;
}

static int
append_input(struct grpc_call *call, const uint8_t *data, size_t len)
{
	struct grpc_conn *c = call->conn;

	if (body_reserve(call, call->in_len + len) < 0)
		return -ENOMEM;
	memcpy(call->in + call->in_len, data, len);
	call->in_len += len;
	c->input += len;
	if (c->budget && !call->client)
		c->budget->used += len;
	return 0;
}

/* Checks the framing of what has arrived so far; an oversized or
 * compressed message is refused before its body is buffered. */
static int
check_prefix(struct grpc_call *call, const uint8_t *data, size_t len)
{
	uint8_t head[GRPC_PREFIX];
	size_t have = call->in_len < GRPC_PREFIX ? call->in_len : GRPC_PREFIX;
	size_t need = GRPC_PREFIX - have;
	uint32_t mlen;

	if (call->in_len >= GRPC_PREFIX)
		return 0;		/* already checked */
	if (have + len < GRPC_PREFIX)
		return 0;
	if (have > 0)
		memcpy(head, call->in, have);
	memcpy(head + have, data, need);
	if (head[0] != 0) {
		reply_error(call, GRPC_STATUS_INVALID_ARGUMENT,
			    head[0] == 1 ? "compressed messages are not supported"
					 : "bad message prefix");
		return -1;
	}
	mlen = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
	if (mlen > GRPC_MAX_MESSAGE) {
		char msg[96];

		snprintf(msg, sizeof(msg), "message of %u bytes is larger than the limit of %d", mlen,
			 GRPC_MAX_MESSAGE);
		reply_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
		return -1;
	}
	call->expect = (size_t)mlen + GRPC_PREFIX;
	return 0;
}

static int
on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
	      size_t len, void *user_data)
{
	struct grpc_conn *c = user_data;
	struct grpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);

	if (call == NULL || call->ignore_body)
		return 0;
	if (!call->client) {
		if (check_prefix(call, data, len) < 0)
			return 0;
		if (call->in_len + len > GRPC_MAX_MESSAGE + GRPC_PREFIX) {
			reply_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				    "more than one message or a message over the limit");
			return 0;
		}
		if (call->expect && call->in_len + len > call->expect) {
			reply_error(call, GRPC_STATUS_INVALID_ARGUMENT,
				    "request is not exactly one well-framed message");
			return 0;
		}
		if (c->input + len > GRPC_MAX_CONN_INPUT) {
			reply_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				    "too much request data buffered on this connection");
			return 0;
		}
		if (c->budget && c->budget->used + len > c->budget->max) {
			reply_error(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
				    "too much request data buffered on this endpoint's connections");
			return 0;
		}
	} else if (call->in_len + len > GRPC_MAX_MESSAGE + GRPC_PREFIX) {
		call->ignore_body = true;
		call->resp_status = GRPC_STATUS_RESOURCE_EXHAUSTED;
		return 0;
	}
	if (append_input(call, data, len) < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

/* Splits a complete body into exactly one message. */
static int
one_message(const struct grpc_call *call, const uint8_t **msg, size_t *len)
{
	uint32_t mlen;

	if (call->in_len < GRPC_PREFIX)
		return -1;
	mlen = (uint32_t)call->in[1] << 24 | (uint32_t)call->in[2] << 16 |
	       (uint32_t)call->in[3] << 8 | call->in[4];
	if ((size_t)mlen + GRPC_PREFIX != call->in_len)
		return -1;
	*msg = call->in + GRPC_PREFIX;
	*len = mlen;
	return 0;
}

static void
request_headers_done(struct grpc_conn *c, struct grpc_call *call)
{
	char msg[192];

	if (!call->method_ok || call->path[0] != '/') {
		reply_http(call, call->method_ok ? "400" : "405");
		return;
	}
	if (!call->ct_ok) {
		reply_http(call, "415");
		return;
	}
	if (c->ops->known_path && !c->ops->known_path(c->arg, call->path)) {
		snprintf(msg, sizeof(msg), "unknown method %.120s", call->path);
		reply_error(call, GRPC_STATUS_UNIMPLEMENTED, msg);
	}
}

static void
request_complete(struct grpc_conn *c, struct grpc_call *call)
{
	const uint8_t *msg;
	size_t len;

	call->request_done = true;
	if (call->ignore_body || call->finishing)
		return;
	if (one_message(call, &msg, &len) < 0) {
		reply_error(call, GRPC_STATUS_INVALID_ARGUMENT,
			    call->in_len < GRPC_PREFIX ? "request has no message"
						       : "request is not exactly one well-framed message");
		return;
	}
	c->ops->request(c->arg, call, call->path, msg, len);
}

static int
on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_conn *c = user_data;
	struct grpc_call *call;

	if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
		c->established = true;
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
	if (call == NULL || call->client)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
		request_headers_done(c, call);
	if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
		request_complete(c, call);
	return 0;
}

static int
on_frame_send(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
	struct grpc_call *call;

	if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
	/* We answered before the client finished sending: tell it to stop
	 * (gRPC: RST_STREAM(NO_ERROR) after the trailers). */
	if (call && !call->client && call->answered && !call->request_done)
		nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
					  NGHTTP2_NO_ERROR);
	return 0;
}

static int
on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user_data)
{
	struct grpc_conn *c = user_data;
	struct grpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);

	if (call == NULL)
		return 0;
	call->closed = true;
	if (call->client) {
		const uint8_t *msg = NULL;
		size_t len = 0;
		int status = call->resp_status;
		const char *text = call->resp_msg;

		if (call->http_status != 200) {
			status = GRPC_STATUS_UNAVAILABLE;
			text = "no HTTP 200 response";
		} else if (status == 0 && one_message(call, &msg, &len) < 0) {
			status = GRPC_STATUS_INTERNAL;
			text = "response is not one well-framed message";
			msg = NULL;
			len = 0;
		}
		if (error_code != NGHTTP2_NO_ERROR && status == 0 && msg == NULL) {
			status = GRPC_STATUS_UNAVAILABLE;
			text = "stream reset";
		}
		c->ops->response(c->arg, call, status, text, msg, len);
	} else if (call->data && c->ops->call_closed) {
		/* The handler still holds it (a stream, or an answer pending). */
		c->ops->call_closed(c->arg, call);
	}
	nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
	call_free(call);
	return 0;
}

static int
on_error(nghttp2_session *h2, int lib_error_code, const char *msg, size_t len, void *user_data)
{
	log_debug("grpc", "http2: %.*s", (int)len, msg);
	return 0;
}

static int
conn_new(const struct grpc_conn_ops *ops, void *arg, bool server, struct grpc_conn **ret)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	struct grpc_conn *c = calloc(1, sizeof(*c));
	int rv;

	if (c == NULL)
		return -ENOMEM;
	c->ops = ops;
	c->arg = arg;
	c->server = server;
	if (nghttp2_session_callbacks_new(&cbs) != 0) {
		free(c);
		return -ENOMEM;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cbs);
		free(c);
		return -ENOMEM;
	}
	/* Bound what a peer can make us hold: header blocks, reserved streams. */
	nghttp2_option_set_max_reserved_remote_streams(opt, 0);
	nghttp2_option_set_max_send_header_block_length(opt, 16384);
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	nghttp2_option_set_max_settings(opt, 32);
	if (server)
		rv = nghttp2_session_server_new2(&c->h2, cbs, c, opt);
	else
		rv = nghttp2_session_client_new2(&c->h2, cbs, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0) {
		free(c);
		return -ENOMEM;
	}
	{
		nghttp2_settings_entry iv[] = {
			{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server ? GRPC_MAX_STREAMS : 16 },
			{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1024 * 1024 },
			{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384 },
		};
		/* The server preface: our SETTINGS are the first frame out. */
		nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 3);
	}
	*ret = c;
	return 0;
}

int
grpc_conn_new_server(const struct grpc_conn_ops *ops, void *arg, struct grpc_conn **ret)
{
	return conn_new(ops, arg, true, ret);
}

int
grpc_conn_new_client(const struct grpc_conn_ops *ops, void *arg, struct grpc_conn **ret)
{
	return conn_new(ops, arg, false, ret);
}

void
grpc_conn_free(struct grpc_conn *c)
{
	if (c == NULL)
		return;
	/* Tell holders first, then drop everything. */
	for (struct grpc_call *call = c->calls; call; call = call->next) {
		call->closed = true;
		if (!call->client && call->data && c->ops->call_closed)
			c->ops->call_closed(c->arg, call);
	}
	while (c->calls)
		call_free(c->calls);
	nghttp2_session_del(c->h2);
	free(c);
}

void
grpc_conn_set_budget(struct grpc_conn *c, struct grpc_budget *b)
{
	c->budget = b;
}

bool
grpc_conn_established(const struct grpc_conn *c)
{
	return c->established;
}

size_t
grpc_conn_buffered(const struct grpc_conn *c)
{
	return c->input;
}

int
grpc_conn_expire_requests(struct grpc_conn *c, int max_ms)
{
	int64_t now = now_ms();
	int n = 0;

	for (struct grpc_call *call = c->calls; call; call = call->next) {
		if (call->client || call->request_done || call->finishing || call->finished ||
		    call->closed || now - call->started_ms < max_ms)
			continue;
		reply_error(call, GRPC_STATUS_DEADLINE_EXCEEDED,
			    "the request did not arrive in time; closing the stream");
		n++;
	}
	return n;
}

int
grpc_conn_recv(struct grpc_conn *c, const uint8_t *data, size_t len)
{
	ssize_t rv;

	if (c->fatal)
		return -EPROTO;
	rv = nghttp2_session_mem_recv(c->h2, data, len);
	if (rv < 0) {
		log_debug("grpc", "http2 receive: %s", nghttp2_strerror((int)rv));
		c->fatal = true;
		/* nghttp2 has queued a GOAWAY for protocol errors; flush it. */
		return -EPROTO;
	}
	return 0;
}

bool
grpc_conn_flush(struct grpc_conn *c, size_t budget)
{
	size_t sent = 0;

	while (sent < budget) {
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(c->h2, &data);

		if (n < 0) {
			log_debug("grpc", "http2 send: %s", nghttp2_strerror((int)n));
			c->fatal = true;
			return false;
		}
		if (n == 0)
			return false;
		c->ops->write(c->arg, data, (size_t)n);
		sent += (size_t)n;
	}
	return nghttp2_session_want_write(c->h2) != 0;
}

bool
grpc_conn_done(const struct grpc_conn *c)
{
	if (c->fatal)
		return !nghttp2_session_want_write(c->h2);
	return !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2);
}

void
grpc_conn_shutdown(struct grpc_conn *c)
{
	/* Graceful: streams already begun may finish; no new ones. */
	nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
			      NULL, 0);
}

struct grpc_call *
grpc_conn_call(struct grpc_conn *c, const char *path, const uint8_t *msg, size_t len)
{
	nghttp2_nv hdrs[] = {
		NV(":method", "POST"),
		NV(":scheme", "http"),
		NV(":path", path),
		NV(":authority", "localhost"),
		NV("content-type", "application/grpc"),
		NV("te", "trailers"),
		NV("user-agent", "hostdevd/" PACKAGE_VERSION),
	};
	nghttp2_data_provider dp = { .read_callback = data_read_cb };
	struct grpc_call *call;
	int32_t id;

	call = call_new(c, -1);
	if (call == NULL)
		return NULL;
	call->client = true;
	call->out = frame_message(msg, len);
	if (call->out == NULL) {
		call_free(call);
		return NULL;
	}
	call->out_len = len + GRPC_PREFIX;
	dp.source.ptr = call;
	id = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &dp, call);
	if (id < 0) {
		call_free(call);
		return NULL;
	}
	call->stream_id = id;
	return call;
}
