/* SPDX-License-Identifier: MIT */
/* driver.c -- runs a libFuzzer target over seeds and seeded mutations */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Without libFuzzer this driver gives every target a deterministic,
 * bounded run in the ordinary test suite (and under ASan/UBSan there);
 * -Dfuzz=true builds the same targets for open-ended coverage-guided runs. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT (64 * 1024)
#define MAX_SEEDS 256

typedef struct seed {
  uint8_t *data;
  size_t len;
} seed_t;

/* The input under test, written out if the target crashes so the failure
 * can be replayed: `fuzz_x DIR 0` with the file copied into DIR. */
static const uint8_t *current_input;
static size_t current_len;

static void save_crash(int sig) {
  int fd = open("fuzz-crash.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    ssize_t n = write(fd, current_input, current_len);
    (void)n;
    close(fd);
    static const char msg[] = "fuzz: crashing input saved to fuzz-crash.bin\n";
    n = write(STDERR_FILENO, msg, sizeof msg - 1);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static void run_one(const uint8_t *data, size_t len) {
  current_input = data;
  current_len = len;
  LLVMFuzzerTestOneInput(data, len);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static size_t below(size_t n) {
  return n ? (size_t)(next_random() % n) : 0;
}

static size_t load_seeds(const char *dir, seed_t *seeds) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    perror(dir);
    exit(1);
  }
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < MAX_SEEDS) {
    if (e->d_name[0] == '.')
      continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
      continue;
    seeds[n].data = malloc(FUZZ_MAX_INPUT);
    seeds[n].len = fread(seeds[n].data, 1, FUZZ_MAX_INPUT, f);
    fclose(f);
    n++;
  }
  closedir(d);
  return n;
}

/* One random edit of buf (len bytes, FUZZ_MAX_INPUT capacity); returns new len.
 */
static size_t mutate(uint8_t *buf, size_t len, const seed_t *seeds,
                     size_t n_seeds) {
  static const char *const tokens[] = {
      "\r\n", "\n",   ":",  " ",  "Host", "host: ", "\r\n\r\n",
      "\0",   "\xff", "*.", ".",  "[",    "]",      "http://",
      "{",    "}",    "- ", "&a", "*a",   "!!",
  };
  size_t at = below(len + 1);
  switch (below(7)) {
  case 0: /* flip a bit */
    if (len)
      buf[below(len)] ^= (uint8_t)(1u << below(8));
    return len;
  case 1: /* set a byte */
    if (len)
      buf[below(len)] = (uint8_t)next_random();
    return len;
  case 2: /* delete a span */
    if (len) {
      size_t n = 1 + below(len - at < 16 ? len - at + 1 : 16);
      if (at + n > len)
        n = len - at;
      memmove(buf + at, buf + at + n, len - at - n);
      return len - n;
    }
    return len;
  case 3: { /* insert a token */
    const char *t = tokens[below(sizeof tokens / sizeof tokens[0])];
    size_t n = strlen(t) ? strlen(t) : 1;
    if (len + n > FUZZ_MAX_INPUT)
      return len;
    memmove(buf + at + n, buf + at, len - at);
    memcpy(buf + at, t, n);
    return len + n;
  }
  case 4: /* truncate */
    return at;
  case 5: { /* duplicate a span */
    size_t n = below(64) + 1;
    if (at + n > len || len + n > FUZZ_MAX_INPUT)
      return len;
    memmove(buf + at + n, buf + at, len - at);
    return len + n;
  }
  default: { /* splice in part of another seed */
    const seed_t *s = &seeds[below(n_seeds)];
    size_t from = below(s->len + 1), n = below(s->len - from + 1);
    if (len + n > FUZZ_MAX_INPUT)
      return len;
    memmove(buf + at + n, buf + at, len - at);
    memcpy(buf + at, s->data + from, n);
    return len + n;
  }
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SEED_DIR ITERATIONS\n", argv[0]);
    return 2;
  }
  static seed_t seeds[MAX_SEEDS];
  size_t n_seeds = load_seeds(argv[1], seeds);
  if (n_seeds == 0) {
    fprintf(stderr, "%s: no seeds\n", argv[1]);
    return 1;
  }
  long iterations = strtol(argv[2], NULL, 10);
  const char *seed_env = getenv("FUZZ_SEED");
  if (seed_env != NULL)
    rng_state = strtoull(seed_env, NULL, 0) | 1;

  signal(SIGABRT, save_crash);
  signal(SIGSEGV, save_crash);
  for (size_t i = 0; i < n_seeds; i++)
    run_one(seeds[i].data, seeds[i].len);

  uint8_t *buf = malloc(FUZZ_MAX_INPUT);
  for (long i = 0; i < iterations; i++) {
    const seed_t *s = &seeds[below(n_seeds)];
    memcpy(buf, s->data, s->len);
    size_t len = s->len;
    for (size_t edits = 1 + below(8); edits > 0; edits--)
      len = mutate(buf, len, seeds, n_seeds);
    /* An exact-size copy lets ASan catch any read past the input. */
    uint8_t *input = malloc(len ? len : 1);
    memcpy(input, buf, len);
    run_one(input, len);
    free(input);
  }
  free(buf);
  for (size_t i = 0; i < n_seeds; i++)
    free(seeds[i].data);
  printf("ok - %zu seeds and %ld mutations\n", n_seeds, iterations);
  return 0;
}
