/* SPDX-License-Identifier: MIT */
/* affinity.c -- workers pinned one per CPU, sockets steered by CPU, and
 * the workers' scheduling policy */
#include "core/core.h"

#include <errno.h>
#include <linux/filter.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

/* The plan: worker i runs on cpus[i]. Written once before the workers
 * start, read-only after, so the threads read it without a lock. */
static int plan_cpus[CORE_AFFINITY_MAX_WORKERS];
static unsigned plan_n;
static atomic_bool steer_refused;

int core_affinity_plan(unsigned n_workers, unsigned *n_cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return -errno;
  *n_cpus = (unsigned)CPU_COUNT(&set);
  if (n_workers > *n_cpus || n_workers > CORE_AFFINITY_MAX_WORKERS)
    return -ERANGE;
  /* The CPUs this process may use, lowest first: a taskset or a systemd
   * CPUAffinity= picks them, and worker i gets the i-th. */
  unsigned n = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE && n < n_workers; cpu++)
    if (CPU_ISSET(cpu, &set))
      plan_cpus[n++] = cpu;
  plan_n = n;
  return 0;
}

int core_affinity_cpu(unsigned worker) {
  return worker < plan_n ? plan_cpus[worker] : -1;
}

int core_affinity_pin(unsigned worker) {
  if (worker >= plan_n)
    return 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(plan_cpus[worker], &set);
  return -pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* The classic BPF program of a SO_REUSEPORT group: it returns the index of
 * the socket that takes a packet, and a group's sockets are indexed in the
 * order they joined it. Workers start one after another and each opens
 * its sockets before the next starts, so worker i's socket is index i: the
 * program maps cpus[i] to i. A packet handled on a CPU outside the plan
 * gets index plan_n, which is past the group's end, and the kernel then
 * picks a socket by hash as it does without a program. */
int core_affinity_steer(int fd) {
  if (plan_n == 0)
    return 0;
  struct sock_filter code[2 + 2 * CORE_AFFINITY_MAX_WORKERS];
  size_t n = 0;
  code[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                           (uint32_t)(SKF_AD_OFF + SKF_AD_CPU));
  for (unsigned i = 0; i < plan_n; i++) {
    /* Equal: fall through to the return; else skip it. */
    code[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                                             (uint32_t)plan_cpus[i], 0, 1);
    code[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, i);
  }
  code[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, plan_n);
  struct sock_fprog prog = {.len = (unsigned short)n, .filter = code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
                 sizeof prog) == 0)
    return 0;
  int err = errno;
  /* Every socket would say the same: tell it once. */
  if (!atomic_exchange(&steer_refused, true))
    core_log(CORE_LOG_WARN,
             "cpu_affinity: the kernel refused to steer sockets by CPU (%s); "
             "their packets are spread by hash instead",
             strerror(err));
  return -err;
}

int core_sched_batch(void) {
  struct sched_param param = {.sched_priority = 0};
  return -pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
}
