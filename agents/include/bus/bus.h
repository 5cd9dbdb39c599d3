/* bus.h: the C ABI of the busd client SDK (libbus_c), for C programs and language bindings
 * (the Python package `busd` loads it with ctypes).
 *
 *   bus_options o;
 *   bus_options_init(&o);
 *   o.name = "planner";
 *   bus_client* c = NULL;
 *   if (bus_connect(&o, &c) != BUS_OK) fprintf(stderr, "%s\n", bus_last_error_message());
 *   bus_subscribe(c, "jobs.>", NULL, on_job, user_data, &sid);
 *   bus_publish(c, "jobs.new", data, len);
 *   bus_message reply;
 *   bus_request(c, "svc.plan", data, len, 5000000, &reply);     // 5 ms
 *   bus_poll(c, 100000000, NULL);                                // dispatch for up to 100 ms
 *   bus_close(c);
 *
 * Library and versioning. The C ABI lives in its own shared library, libbus_c.so.<ABI>, whose
 * soname carries BUS_ABI_VERSION (libbus_c.so.1); it links libbus.so (the C++ SDK, whose own
 * soname follows the C++ ABI, which is free to change between releases). A C program or a
 * binding built against ABI version N runs against every later libbus_c.so.N. The rule that
 * keeps that promise, within one ABI version:
 *   - functions, enum values and constants are only ever added, never removed, renamed or
 *     re-typed; existing enum values keep their numbers (the error codes are schemas/errors.fbs,
 *     which is append-only anyway);
 *   - the structs the caller fills or receives start with their size (`struct_size`: the
 *     caller's sizeof) where they may grow; new fields are appended and the library reads or
 *     writes only the bytes the caller said it has (bus_stats, bus_options);
 *   - bus_message only gains fields at its end; the library never reads one from the caller
 *     beyond those of ABI version 1 without a struct_size;
 *   - handles stay opaque; no C++ type, no exception and no errno convention crosses the ABI.
 * Adding (a function, an enum value, a field at the end of a sized struct) is compatible: it
 * keeps BUS_ABI_VERSION and bumps the minor number of the library's file (libbus_c.so.1.<minor>,
 * BUS_ABI_MINOR), and the addition says "since 1.<minor>" beside it; a program that uses it
 * needs a library at least that new (the dynamic loader refuses an older one: missing symbol).
 * A change that breaks any of these bumps BUS_ABI_VERSION and with it the soname. A program
 * can check at run time with bus_abi_version() that the library it loaded is the one it was
 * built for.
 *
 * Errors. Every call that can fail returns a bus_status (BUS_OK = 0); the codes mirror
 * bus::Errc. The detail of the last failure on the calling thread ("Timeout: no reply") is
 * bus_last_error_message() (thread-local; valid until the thread's next failing call). No C++
 * exception ever leaves a bus_* function: each catches everything, and an exception (out of
 * memory, ...) becomes BUS_E_INTERNAL with its what() as the message.
 *
 * Threads. A bus_client is used by one thread at a time, like bus::Client: each declaration
 * below says "thread-safe" or "not thread-safe" (= one thread at a time per client), and callbacks run on the thread that calls
 * bus_poll(), bus_run(), bus_next() or bus_request(). Distinct clients can be used from
 * distinct threads at once. Calls that take no client (bus_version, bus_strerror, ...) are
 * thread-safe. bus_wake() and bus_stop() are the two calls another thread may make on a client
 * that one thread polls: an event loop hands work to a polling I/O thread and bus_wake()s it.
 *
 * Memory. Views (const char* + length, payload pointers) handed to a callback are valid until
 * the callback returns; a reply from bus_request() or a message from bus_next() is valid until
 * the next call on the same client. Strings the caller passes are copied when needed; none is
 * kept after the call returns. Subjects and names are NUL-terminated UTF-8; payloads are bytes.
 */
#ifndef BUS_BUS_H
#define BUS_BUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes (the soname's number: libbus_c.so.1). */
#define BUS_ABI_VERSION 1
/** Compatible additions within BUS_ABI_VERSION (libbus_c.so.1.<minor>): 1 = bus_wake(). */
#define BUS_ABI_MINOR 1

#if defined(__GNUC__)
#define BUS_API __attribute__((visibility("default")))
#else
#define BUS_API
#endif

/** Status codes: the values of bus::Errc (schemas/errors.fbs), plus BUS_E_INTERNAL. */
typedef enum bus_status {
  BUS_OK = 0,
  BUS_E_WOULD_BLOCK = 1,        /* ring full: try again (publish waited publish_timeout_ms) */
  BUS_E_TIMEOUT = 2,            /* a wait or a request deadline expired */
  BUS_E_TOO_LARGE = 3,          /* a message above the configured maximum */
  BUS_E_CORRUPT = 4,
  BUS_E_BAD_MESSAGE = 5,
  BUS_E_VERSION_MISMATCH = 6,
  BUS_E_NOT_FOUND = 7,          /* no such subscription, agent, ... */
  BUS_E_NO_RESPONDERS = 8,      /* a request found nobody subscribed to its subject */
  BUS_E_PERMISSION_DENIED = 9,  /* busd's ACL refused it */
  BUS_E_CLOSED = 10,            /* not connected (closed, or busd went away) */
  BUS_E_INVALID_ARGUMENT = 11,  /* a bad subject, a NULL where a value is needed, ... */
  BUS_E_SYSTEM = 12,            /* a system call failed (errno text in the message) */
  BUS_E_UNSUPPORTED = 13,
  BUS_E_ALREADY_EXISTS = 14,    /* e.g. another agent has this name */
  BUS_E_LIMIT_REACHED = 15,
  BUS_E_SHUTTING_DOWN = 16,
  BUS_E_CANCELLED = 17,
  BUS_E_INTERNAL = 1000         /* a C++ exception was caught at the boundary (out of memory) */
} bus_status;

/** Connection states (bus::ConnectionState). */
typedef enum bus_state {
  BUS_STATE_CONNECTING = 0,
  BUS_STATE_CONNECTED = 1,
  BUS_STATE_DISCONNECTED = 2, /* busd went away: reconnecting by itself if enabled */
  BUS_STATE_CLOSED = 3
} bus_state;

/** Slow-consumer policies for a subscription (bus::SlowPolicy). */
typedef enum bus_slow_policy {
  BUS_SLOW_BLOCK = 0,
  BUS_SLOW_DROP_OLDEST = 1,
  BUS_SLOW_DROP_NEWEST = 2,
  BUS_SLOW_DISCONNECT = 3
} bus_slow_policy;

/** bus_publish_ex / bus_commit flags. */
#define BUS_FLUSH_NOW 0u
#define BUS_FLUSH_LATER 1u /* batch: busd takes it at the next flush, request, reply or poll */

/** bus_message.flags */
#define BUS_MSG_REQUEST 1u /* a request: answer it with bus_reply() or bus_reply_to() */

typedef struct bus_client bus_client;         /* opaque */
typedef struct bus_agent_list bus_agent_list; /* opaque: bus_find_agents() */

/** A received message: views valid as described under "Memory" above. */
typedef struct bus_message {
  const char* subject;
  size_t subject_len;
  const char* reply_to; /* "" unless a request */
  size_t reply_to_len;
  const void* payload;
  size_t payload_len;
  uint64_t id;        /* the message id (a request's: pass it to bus_reply_to) */
  uint32_t sid;       /* the subscription it was delivered for (0: a reply) */
  uint32_t source_id; /* the sender's agent id */
  uint32_t lane;      /* direct lane it came over (0: through busd); pass it to bus_reply_to */
  uint32_t flags;     /* BUS_MSG_REQUEST */
  const void* internal; /* the library's; NULL once the views are no longer valid for bus_reply */
} bus_message;

/** Connection options. Call bus_options_init() first: it sets struct_size and the defaults. */
typedef struct bus_options {
  size_t struct_size;                /* sizeof(bus_options) as the caller compiled it */
  const char* name;                  /* required: unique on this host */
  const char* const* capabilities;   /* found by bus_find_agents() */
  size_t capabilities_len;
  const char* address;               /* NULL: $BUS_SOCKET, $XDG_RUNTIME_DIR/busd.sock, ... */
  const char* tls_ca;                /* NULL: $BUS_TLS_CA (see bus::ClientOptions) */
  const char* tls_cert;
  const char* tls_key;
  const char* tls_server_name;
  const char* token;                 /* NULL: $BUS_TOKEN */
  const char* wait;                  /* "spin" | "yield" | "adaptive[:<n>us]" | "block"; NULL: adaptive */
  int reconnect;                     /* default 1 */
  int hop_timing;                    /* default 0 */
  int64_t connect_timeout_ms;        /* default 2000 */
  int64_t control_timeout_ms;        /* default 2000 */
  int64_t publish_timeout_ms;        /* default 1000 (0: WouldBlock at once when the ring is full) */
} bus_options;

/** Client counters (bus::Client::Stats). */
typedef struct bus_stats {
  size_t struct_size; /* set by the caller: the library fills only what fits */
  uint64_t published, received, requests, replies_late, verify_failures;
  uint64_t reconnects, resubscribe_failures;
  uint64_t lane_sent, lane_received, lanes_opened, lanes_closed, lanes_open;
} bus_stats;

/** One agent from bus_find_agents(); its strings live as long as the list. */
typedef struct bus_agent_info {
  const char* name;
  uint32_t agent_id;
  uint32_t pid;
  uint32_t uid;
  const char* const* capabilities;
  size_t capabilities_len;
} bus_agent_info;

/** Callbacks. `user` is what was passed at registration. */
typedef void (*bus_message_fn)(void* user, bus_client* c, const bus_message* msg);
/** An answer to bus_send_request(): status BUS_OK and the reply, or an error and reply NULL
 *  (the detail is bus_last_error_message() during the call). */
typedef void (*bus_reply_fn)(void* user, bus_client* c, uint64_t request_id, bus_status status,
                             const bus_message* reply);
/** A state change; status != BUS_OK says why (detail: bus_last_error_message() during the call). */
typedef void (*bus_state_fn)(void* user, bus_client* c, bus_state state, bus_status status);

/* ---- library (all thread-safe) ------------------------------------------------------------ */

/** The library's version, "0.1.0". Thread-safe. */
BUS_API const char* bus_version(void); /* thread-safe */
/** The ABI version of the loaded library (BUS_ABI_VERSION it was built with). Thread-safe. */
BUS_API int bus_abi_version(void); /* thread-safe */
/** The stable name of a status ("Timeout", "NoResponders"); "Unknown" otherwise. Thread-safe. */
BUS_API const char* bus_strerror(bus_status status); /* thread-safe */
/** The message of the calling thread's last failure ("Timeout: no reply"); "" if none.
 *  Thread-safe (thread-local): valid until this thread's next failing bus_* call. */
BUS_API const char* bus_last_error_message(void); /* thread-safe */
/** The name of a state ("connected"). Thread-safe. */
BUS_API const char* bus_state_name(bus_state state); /* thread-safe */

/* ---- connecting ---------------------------------------------------------------------------- */

/** Sets o to the defaults (and o->struct_size). Thread-safe. */
BUS_API void bus_options_init(bus_options* o); /* thread-safe */
/** Connects to busd. On success *out is a client to bus_close() later. Thread-safe (each call
 *  makes its own client). Errors: InvalidArgument, Closed/System (busd not there), AlreadyExists,
 *  PermissionDenied, Timeout, VersionMismatch. */
BUS_API bus_status bus_connect(const bus_options* o, bus_client** out); /* thread-safe */
/** Closes the connection and frees the client (NULL is ignored). No callback runs. */
BUS_API void bus_close(bus_client* c); /* not thread-safe */
/** Graceful exit: unsubscribes, dispatches what arrived, waits up to timeout_ns until busd took
 *  everything published, then closes (the client must still be freed with bus_close()). */
BUS_API bus_status bus_drain(bus_client* c, int64_t timeout_ns); /* not thread-safe */
/** The current connection state. */
BUS_API bus_state bus_get_state(const bus_client* c); /* not thread-safe */
/** Registers the state-change callback (NULL removes it). */
BUS_API void bus_on_state_change(bus_client* c, bus_state_fn fn, void* user); /* not thread-safe */
/** This agent's id and name (the name lives as long as the client). */
BUS_API uint32_t bus_agent_id(const bus_client* c); /* not thread-safe */
BUS_API const char* bus_name(const bus_client* c); /* not thread-safe */
/** Copies the client's counters into *out (up to out->struct_size bytes). */
BUS_API bus_status bus_get_stats(const bus_client* c, bus_stats* out); /* not thread-safe */

/* ---- publishing ---------------------------------------------------------------------------- */

/** Publishes payload on subject (waits up to publish_timeout_ms while the ring is full).
 *  Errors: InvalidArgument, TooLarge, WouldBlock, Closed. */
BUS_API bus_status bus_publish(bus_client* c, const char* subject, const void* payload, size_t len); /* not thread-safe */
/** The same with BUS_FLUSH_NOW or BUS_FLUSH_LATER (batching). */
BUS_API bus_status bus_publish_ex(bus_client* c, const char* subject, const void* payload, size_t len,
                                  unsigned flags); /* not thread-safe */
/** Makes every BUS_FLUSH_LATER message visible to busd. */
BUS_API void bus_flush(bus_client* c); /* not thread-safe */
/** Zero copy: claims room for a message on subject with up to max_payload bytes; *out is where
 *  to write them (ring memory, 8-byte aligned), *room how many bytes it has. One reservation at
 *  a time; bus_commit() sends it, bus_abandon() drops it. */
BUS_API bus_status bus_reserve(bus_client* c, const char* subject, size_t max_payload, void** out,
                               size_t* room); /* not thread-safe */
/** Sends the reserved message with its first len bytes (flags: BUS_FLUSH_*). */
BUS_API bus_status bus_commit(bus_client* c, size_t len, unsigned flags); /* not thread-safe */
BUS_API void bus_abandon(bus_client* c); /* not thread-safe */

/* ---- subscribing and receiving ------------------------------------------------------------- */

/** Subscribes to pattern (`*` one token, `>` the rest), in queue_group if not NULL/"", with a
 *  slow-consumer policy. fn is called for each message from bus_poll()/bus_run()/bus_request();
 *  fn NULL queues the messages (copied) for bus_next() instead. *sid (may be NULL) gets the
 *  subscription id. Returns once busd acknowledged it. Errors: InvalidArgument,
 *  PermissionDenied, LimitReached, Closed, Timeout. */
BUS_API bus_status bus_subscribe(bus_client* c, const char* pattern, const char* queue_group,
                                 bus_slow_policy slow, bus_message_fn fn, void* user, uint32_t* sid); /* not thread-safe */
/** Ends a subscription (NotFound if there is none with that id). Queued messages of it stay. */
BUS_API bus_status bus_unsubscribe(bus_client* c, uint32_t sid); /* not thread-safe */
/** Dispatches received messages to their callbacks, waiting up to timeout_ns for the first.
 *  *dispatched (may be NULL) gets how many (0 on timeout: not an error). */
BUS_API bus_status bus_poll(bus_client* c, int64_t timeout_ns, size_t* dispatched); /* not thread-safe */
/** bus_poll() until bus_stop(). */
BUS_API bus_status bus_run(bus_client* c); /* not thread-safe */
/** Makes bus_run() return, promptly: it wakes the wait in progress as bus_wake() does.
 *  Thread-safe and async-signal-safe. Until the next bus_run(), bus_poll() returns without
 *  waiting and bus_next() returns BUS_E_CANCELLED (as bus::Client::stop()). */
BUS_API void bus_stop(bus_client* c); /* thread-safe */
/** Since 1.1. Ends the wait of a bus_poll() or bus_next() in progress on another thread
 *  promptly, or if none waits, the next one's (wake-ups before a poll takes them count as one):
 *  bus_poll() returns BUS_OK with 0 dispatched, bus_next() BUS_E_CANCELLED. The client goes on
 *  working (unlike bus_stop(); bus_run() is not ended by it, nor is bus_request(), which waits
 *  for its reply). What the caller did before bus_wake() is visible to the polling thread once
 *  its call returns: queue a command, then bus_wake(). Thread-safe and async-signal-safe; the
 *  client must not be closed meanwhile (bus_close() is not thread-safe). Costs an atomic
 *  exchange, and a write(2) only when the poller sleeps in the kernel; nothing is added to the
 *  message path of the polling thread. */
BUS_API void bus_wake(bus_client* c); /* thread-safe */
/** Poll style: the next message of a subscription made with fn NULL, waiting up to timeout_ns
 *  (dispatching callback subscriptions meanwhile). Timeout when none came. The message is a
 *  copy, valid until the next call on the client; bus_reply() works on it until then. */
BUS_API bus_status bus_next(bus_client* c, int64_t timeout_ns, bus_message* out); /* not thread-safe */

/* ---- request / reply ----------------------------------------------------------------------- */

/** Sends a request and waits up to timeout_ns for its reply (dispatching other messages
 *  meanwhile); *reply (views valid until the next call on the client). Errors: NoResponders (at
 *  once), Timeout, Closed, or what the responder answered (bus_reply_error). */
BUS_API bus_status bus_request(bus_client* c, const char* subject, const void* payload, size_t len,
                               int64_t timeout_ns, bus_message* reply); /* not thread-safe */
/** Sends a request without waiting; the answer goes to the bus_on_reply callback (from bus_poll
 *  etc.) with the id stored in *request_id. Many may be in flight. */
BUS_API bus_status bus_send_request(bus_client* c, const char* subject, const void* payload, size_t len,
                                    int64_t timeout_ns, uint64_t* request_id); /* not thread-safe */
BUS_API void bus_on_reply(bus_client* c, bus_reply_fn fn, void* user); /* not thread-safe */
/** Answers a request received in a callback (during it) or from bus_next (until the next call). */
BUS_API bus_status bus_reply(bus_client* c, const bus_message* request, const void* payload, size_t len); /* not thread-safe */
/** Answers with an error code; the requester's bus_request() returns it, detail as its message. */
BUS_API bus_status bus_reply_error(bus_client* c, const bus_message* request, bus_status code,
                                   const char* detail); /* not thread-safe */
/** Answers a request at any later time from its copied reply_to, id and lane (status BUS_OK: a
 *  reply with payload; otherwise an error reply whose payload is the detail text). */
BUS_API bus_status bus_reply_to(bus_client* c, const char* reply_to, uint64_t request_id, uint32_t lane,
                                bus_status status, const void* payload, size_t len); /* not thread-safe */

/* ---- discovery ----------------------------------------------------------------------------- */

/** Agents with capability (and a name matching name_glob, NULL: any). *out: free it with
 *  bus_agent_list_free(); it does not depend on the client afterwards. */
BUS_API bus_status bus_find_agents(bus_client* c, const char* capability, const char* name_glob,
                                   bus_agent_list** out); /* not thread-safe */
/** Thread-safe on distinct lists; the list is read-only. */
BUS_API size_t bus_agent_list_size(const bus_agent_list* l); /* thread-safe */
BUS_API bus_status bus_agent_list_get(const bus_agent_list* l, size_t i, bus_agent_info* out); /* thread-safe */
BUS_API void bus_agent_list_free(bus_agent_list* l); /* thread-safe */

#ifdef __cplusplus
}
#endif

#endif /* BUS_BUS_H */
