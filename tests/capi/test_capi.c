/* The C ABI (bus/bus.h) from a C11 program, against a real busd ($BUSD_BIN, started here with
 * its own socket in a temporary directory): pub/sub (callback and bus_next), request/reply, a
 * timeout, no responders, an error reply, send_request, discovery, reserve/commit, counters,
 * bus_wake from another thread, state changes and the error messages. Under 1 s. Compiled with
 * -std=c11 -Wall -Wextra -Werror -pedantic: it also proves the header is C. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"

static int failures = 0;
#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              bus_last_error_message());                                              \
      ++failures;                                                                     \
    }                                                                                 \
  } while (0)

static pid_t busd_pid = -1;
static char dir[256];
static char sock[300];

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static void stop_busd(void) {
  char cmd[300];
  if (busd_pid > 0) {
    kill(busd_pid, SIGKILL);
    waitpid(busd_pid, NULL, 0);
    busd_pid = -1;
  }
  if (dir[0] != '\0' && getenv("BUS_TEST_KEEP") == NULL) {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  }
}

static int start_busd(void) {
  const char* bin = getenv("BUSD_BIN");
  char log[300];
  struct stat st;
  int i;
  if (bin == NULL) {
    printf("BUSD_BIN is not set (run through meson test)\n");
    exit(77);
  }
  snprintf(dir, sizeof dir, "/tmp/busd-capi-XXXXXX");
  if (mkdtemp(dir) == NULL) return -1;
  snprintf(sock, sizeof sock, "%s/busd.sock", dir);
  snprintf(log, sizeof log, "%s/busd.log", dir);
  busd_pid = fork();
  if (busd_pid == 0) {
    setenv("BUS_SOCKET", sock, 1);
    if (freopen(log, "a", stdout) == NULL || freopen(log, "a", stderr) == NULL) _exit(126);
    execl(bin, bin, (char*)NULL);
    _exit(127);
  }
  for (i = 0; i < 500; ++i) { /* up to 5 s for the socket */
    if (stat(sock, &st) == 0) {
      sleep_ms(20);
      return 0;
    }
    sleep_ms(10);
  }
  return -1;
}

static bus_client* connect_as(const char* name, const char* const* caps, size_t ncaps) {
  bus_options o;
  bus_client* c = NULL;
  bus_status st;
  bus_options_init(&o);
  o.name = name;
  o.address = sock;
  o.capabilities = caps;
  o.capabilities_len = ncaps;
  st = bus_connect(&o, &c);
  if (st != BUS_OK) fprintf(stderr, "connect %s: %s\n", name, bus_last_error_message());
  return c;
}

/* ---- the responder: its own client on its own thread */
static atomic_int responder_ready;
static bus_client* responder;

static void on_echo(void* user, bus_client* c, const bus_message* m) {
  char buf[256];
  size_t i, n = m->payload_len < sizeof buf ? m->payload_len : sizeof buf;
  (void)user;
  for (i = 0; i < n; ++i) {
    char ch = ((const char*)m->payload)[i];
    buf[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch);
  }
  bus_reply(c, m, buf, n);
}
static void on_fail(void* user, bus_client* c, const bus_message* m) {
  (void)user;
  bus_reply_error(c, m, BUS_E_PERMISSION_DENIED, "not for you");
}
static void on_late(void* user, bus_client* c, const bus_message* m) {
  (void)user;
  (void)c;
  (void)m; /* never answers */
}
static void* responder_main(void* arg) {
  static const char* const caps[] = {"echo"};
  (void)arg;
  responder = connect_as("c-responder", caps, 1);
  if (responder == NULL) {
    atomic_store(&responder_ready, -1);
    return NULL;
  }
  if (bus_subscribe(responder, "svc.echo", NULL, BUS_SLOW_BLOCK, on_echo, NULL, NULL) != BUS_OK ||
      bus_subscribe(responder, "svc.fail", NULL, BUS_SLOW_BLOCK, on_fail, NULL, NULL) != BUS_OK ||
      bus_subscribe(responder, "svc.late", NULL, BUS_SLOW_BLOCK, on_late, NULL, NULL) != BUS_OK) {
    atomic_store(&responder_ready, -1);
    return NULL;
  }
  atomic_store(&responder_ready, 1);
  bus_run(responder);
  return NULL;
}

/* ---- callbacks of the main client */
static int cb_count = 0;
static char cb_last[64];
static void on_news(void* user, bus_client* c, const bus_message* m) {
  size_t n = m->payload_len < sizeof cb_last - 1 ? m->payload_len : sizeof cb_last - 1;
  (void)c;
  CHECK(user == (void*)&cb_count);
  CHECK(m->subject_len == strlen("news.cb") && memcmp(m->subject, "news.cb", m->subject_len) == 0);
  memcpy(cb_last, m->payload, n);
  cb_last[n] = '\0';
  ++cb_count;
}

static int replies_ok = 0, replies_err = 0;
static void on_reply(void* user, bus_client* c, uint64_t id, bus_status st, const bus_message* r) {
  (void)user;
  (void)c;
  (void)id;
  if (st == BUS_OK && r != NULL && r->payload_len == 5 && memcmp(r->payload, "ASYNC", 5) == 0) ++replies_ok;
  if (st == BUS_E_NO_RESPONDERS && r == NULL && bus_last_error_message()[0] != '\0') ++replies_err;
}

/* ---- bus_wake: a thread waits in bus_poll or bus_next for 10 s; another wakes it */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
struct waiter {
  bus_client* c;
  int next; /* 0: bus_poll, 1: bus_next */
  atomic_int started;
  bus_status st;
  size_t dispatched;
  double seconds;
  int said_cancelled; /* bus_last_error_message() is per thread: checked on the waiter's */
};
static void* waiter_main(void* arg) {
  struct waiter* w = arg;
  bus_message m;
  double t0;
  atomic_store(&w->started, 1);
  t0 = now_s();
  if (w->next) w->st = bus_next(w->c, 10000000000LL, &m);
  else w->st = bus_poll(w->c, 10000000000LL, &w->dispatched);
  w->seconds = now_s() - t0;
  w->said_cancelled = strstr(bus_last_error_message(), "Cancelled") != NULL;
  return NULL;
}
static void check_wake(bus_client* c, int next) {
  struct waiter w;
  pthread_t t;
  int i;
  memset(&w, 0, sizeof w);
  w.c = c;
  w.next = next;
  w.dispatched = 99;
  atomic_init(&w.started, 0);
  pthread_create(&t, NULL, waiter_main, &w);
  for (i = 0; i < 500 && atomic_load(&w.started) == 0; ++i) sleep_ms(1);
  sleep_ms(50); /* it is asleep in the call by now (if not, the wake-up waits for it) */
  bus_wake(c);
  pthread_join(t, NULL);
  printf("bus_wake ended a 10 s %s after %.1f ms\n", next ? "bus_next" : "bus_poll", w.seconds * 1e3);
  CHECK(w.seconds < 1.0); /* the wake-up, not the 10 s timeout */
  if (next) {
    CHECK(w.st == BUS_E_CANCELLED);
    CHECK(w.said_cancelled);
  } else {
    CHECK(w.st == BUS_OK);
    CHECK(w.dispatched == 0);
  }
}

static int states_closed = 0;
static void on_state(void* user, bus_client* c, bus_state s, bus_status st) {
  (void)user;
  (void)c;
  (void)st;
  if (s == BUS_STATE_CLOSED) ++states_closed;
}

int main(void) {
  bus_client *a, *b;
  bus_status st;
  bus_message m;
  pthread_t th;
  int i;
  uint32_t sid = 0;

  setvbuf(stdout, NULL, _IONBF, 0);
  /* ---- the library */
  CHECK(bus_abi_version() == BUS_ABI_VERSION);
  CHECK(strcmp(bus_version(), "0.1.0") == 0);
  CHECK(strcmp(bus_strerror(BUS_E_TIMEOUT), "Timeout") == 0);
  CHECK(strcmp(bus_strerror(BUS_E_NO_RESPONDERS), "NoResponders") == 0);
  CHECK(strcmp(bus_strerror((bus_status)999), "Unknown") == 0);
  CHECK(strcmp(bus_state_name(BUS_STATE_CONNECTED), "connected") == 0);

  /* ---- bad input: a clear error, no crash */
  {
    bus_options o;
    bus_client* c = (bus_client*)&o; /* must be reset to NULL */
    bus_options_init(&o);
    st = bus_connect(&o, &c);
    CHECK(st == BUS_E_INVALID_ARGUMENT);
    CHECK(c == NULL);
    CHECK(strstr(bus_last_error_message(), "name") != NULL);
    CHECK(bus_connect(NULL, &c) == BUS_E_INVALID_ARGUMENT);
    o.name = "nobody";
    o.address = "/nonexistent/busd.sock";
    o.reconnect = 0;
    o.connect_timeout_ms = 200;
    st = bus_connect(&o, &c);
    CHECK(st != BUS_OK);
    CHECK(c == NULL);
    CHECK(bus_last_error_message()[0] != '\0');
    printf("connect to a missing busd: %s (%s)\n", bus_strerror(st), bus_last_error_message());
  }

  if (start_busd() != 0) {
    fprintf(stderr, "busd did not start\n");
    stop_busd();
    return 1;
  }
  a = connect_as("c-main", NULL, 0);
  b = connect_as("c-other", NULL, 0);
  CHECK(a != NULL && b != NULL);
  if (a == NULL || b == NULL) {
    stop_busd();
    return 1;
  }
  CHECK(bus_get_state(a) == BUS_STATE_CONNECTED);
  CHECK(strcmp(bus_name(a), "c-main") == 0);
  CHECK(bus_agent_id(a) != 0 && bus_agent_id(a) != bus_agent_id(b));
  pthread_create(&th, NULL, responder_main, NULL);
  for (i = 0; i < 500 && atomic_load(&responder_ready) == 0; ++i) sleep_ms(10);
  CHECK(atomic_load(&responder_ready) == 1);

  /* ---- pub/sub: a callback subscription and a poll-style one, across two clients */
  CHECK(bus_subscribe(b, "news.>", NULL, BUS_SLOW_BLOCK, NULL, NULL, &sid) == BUS_OK);
  CHECK(sid != 0);
  CHECK(bus_subscribe(a, "news.cb", NULL, BUS_SLOW_BLOCK, on_news, &cb_count, NULL) == BUS_OK);
  for (i = 0; i < 3; ++i) {
    char p[16];
    int n = snprintf(p, sizeof p, "item %d", i);
    CHECK(bus_publish(a, "news.items", p, (size_t)n) == BUS_OK);
  }
  for (i = 0; i < 3; ++i) {
    char want[16];
    int n = snprintf(want, sizeof want, "item %d", i);
    st = bus_next(b, 2000000000LL, &m);
    CHECK(st == BUS_OK);
    if (st != BUS_OK) break;
    CHECK(m.sid == sid);
    CHECK(m.payload_len == (size_t)n && memcmp(m.payload, want, (size_t)n) == 0);
    CHECK(m.subject_len == 10 && strcmp(m.subject, "news.items") == 0);
    CHECK((m.flags & BUS_MSG_REQUEST) == 0);
  }
  CHECK(bus_next(b, 20000000LL, &m) == BUS_E_TIMEOUT); /* nothing more */
  CHECK(bus_publish(b, "news.cb", "hello", 5) == BUS_OK);
  for (i = 0; i < 200 && cb_count == 0; ++i) bus_poll(a, 10000000LL, NULL);
  CHECK(cb_count == 1 && strcmp(cb_last, "hello") == 0);
  /* b gets its own publish on news.cb too (news.>) */
  CHECK(bus_next(b, 2000000000LL, &m) == BUS_OK && m.payload_len == 5);

  /* ---- zero copy: reserve/commit */
  {
    void* room = NULL;
    size_t n = 0;
    CHECK(bus_reserve(a, "news.zc", 64, &room, &n) == BUS_OK);
    CHECK(room != NULL && n >= 64);
    if (room != NULL) memcpy(room, "zero-copy", 9);
    CHECK(bus_commit(a, 9, BUS_FLUSH_NOW) == BUS_OK);
    CHECK(bus_next(b, 2000000000LL, &m) == BUS_OK);
    CHECK(m.payload_len == 9 && memcmp(m.payload, "zero-copy", 9) == 0);
    CHECK(bus_commit(a, 1, BUS_FLUSH_NOW) == BUS_E_INVALID_ARGUMENT); /* nothing reserved */
  }

  /* ---- request/reply */
  st = bus_request(a, "svc.echo", "ping", 4, 2000000000LL, &m);
  CHECK(st == BUS_OK);
  CHECK(st == BUS_OK && m.payload_len == 4 && memcmp(m.payload, "PING", 4) == 0);
  /* a timeout: the responder never answers svc.late */
  st = bus_request(a, "svc.late", "x", 1, 50000000LL, &m);
  CHECK(st == BUS_E_TIMEOUT);
  CHECK(strstr(bus_last_error_message(), "Timeout") != NULL);
  /* nobody subscribed */
  st = bus_request(a, "svc.nobody", "x", 1, 1000000000LL, &m);
  CHECK(st == BUS_E_NO_RESPONDERS);
  CHECK(strstr(bus_last_error_message(), "NoResponders") != NULL);
  /* an error answered by the responder: its code and its detail */
  st = bus_request(a, "svc.fail", "x", 1, 2000000000LL, &m);
  CHECK(st == BUS_E_PERMISSION_DENIED);
  CHECK(strstr(bus_last_error_message(), "not for you") != NULL);
  /* bad arguments */
  CHECK(bus_request(a, "svc.echo", NULL, 3, 1000, &m) == BUS_E_INVALID_ARGUMENT);
  CHECK(bus_publish(a, "", "x", 1) == BUS_E_INVALID_ARGUMENT);
  CHECK(bus_unsubscribe(a, 9999) == BUS_E_NOT_FOUND);

  /* ---- send_request: two in flight, one answered, one with nobody there */
  {
    uint64_t id1 = 0, id2 = 0;
    bus_on_reply(a, on_reply, NULL);
    CHECK(bus_send_request(a, "svc.echo", "async", 5, 2000000000LL, &id1) == BUS_OK);
    st = bus_send_request(a, "svc.nobody", "x", 1, 2000000000LL, &id2);
    CHECK(id1 != 0);
    for (i = 0; i < 200 && replies_ok + replies_err < (st == BUS_OK ? 2 : 1); ++i) bus_poll(a, 10000000LL, NULL);
    CHECK(replies_ok == 1);
    if (st == BUS_OK) CHECK(replies_err == 1);
    else CHECK(st == BUS_E_NO_RESPONDERS);
  }

  /* ---- discovery */
  {
    bus_agent_list* l = NULL;
    bus_agent_info info;
    CHECK(bus_find_agents(a, "echo", NULL, &l) == BUS_OK);
    CHECK(bus_agent_list_size(l) == 1);
    if (bus_agent_list_size(l) == 1) {
      CHECK(bus_agent_list_get(l, 0, &info) == BUS_OK);
      CHECK(strcmp(info.name, "c-responder") == 0);
      CHECK(info.capabilities_len == 1 && strcmp(info.capabilities[0], "echo") == 0);
      CHECK(info.pid == (uint32_t)getpid());
    }
    CHECK(bus_agent_list_get(l, 5, &info) == BUS_E_NOT_FOUND);
    bus_agent_list_free(l);
    CHECK(bus_find_agents(a, "no-such-capability", NULL, &l) == BUS_OK);
    CHECK(bus_agent_list_size(l) == 0);
    bus_agent_list_free(l);
  }

  /* ---- counters */
  {
    bus_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK(bus_get_stats(a, &s) == BUS_OK);
    CHECK(s.published >= 4);
    CHECK(s.requests >= 5);
    CHECK(s.received >= 1);
    s.struct_size = 0;
    CHECK(bus_get_stats(a, &s) == BUS_E_INVALID_ARGUMENT);
  }

  /* ---- bus_wake: ends another thread's bus_poll/bus_next wait; counted once; b keeps working */
  {
    double t0;
    size_t n = 7;
    check_wake(b, 0);
    check_wake(b, 1);
    /* taken: the next poll waits its whole timeout again */
    t0 = now_s();
    CHECK(bus_poll(b, 30000000LL, &n) == BUS_OK && n == 0);
    CHECK(now_s() - t0 >= 0.025);
    /* a wake-up with nobody polling is owed to the next poll (twice counts once) */
    bus_wake(b);
    bus_wake(b);
    t0 = now_s();
    CHECK(bus_poll(b, 5000000000LL, &n) == BUS_OK && n == 0);
    CHECK(now_s() - t0 < 1.0);
    t0 = now_s();
    CHECK(bus_next(b, 30000000LL, &m) == BUS_E_TIMEOUT);
    CHECK(now_s() - t0 >= 0.025);
    /* and b still works */
    CHECK(bus_publish(a, "news.after-wake", "w", 1) == BUS_OK);
    CHECK(bus_next(b, 2000000000LL, &m) == BUS_OK && m.payload_len == 1);
    bus_wake(NULL); /* ignored */
  }

  /* ---- state: drain closes, the callback sees it */
  bus_on_state_change(a, on_state, NULL);
  CHECK(bus_unsubscribe(b, sid) == BUS_OK);
  CHECK(bus_drain(a, 1000000000LL) == BUS_OK);
  CHECK(bus_get_state(a) == BUS_STATE_CLOSED);
  CHECK(states_closed == 1);
  CHECK(bus_publish(a, "news.items", "late", 4) == BUS_E_CLOSED);
  bus_close(a);
  bus_close(b);
  bus_stop(responder);
  pthread_join(th, NULL);
  bus_close(responder);
  bus_close(NULL);
  stop_busd();
  if (failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("test_capi: all checks passed\n");
  return 0;
}
