// The CUDA emulator: runs the project's kernel headers (*.cuh) on the CPU,
// one fiber per CUDA thread, so CI tests kernels without a GPU
// (design/CUDA-TESTING.md). C++17, host only, test code: never linked into
// the library.
//
// Include this header before any kernel header. It defines MXL_CUDA_EMULATE
// and the macros common.cuh leaves to it:
//   MXL_LAUNCH(kernel, grid, block, smem, stream, args...)
//       runs every block of the grid, one after another, on this OS thread;
//       its value is 0, or -1 with mxl_emu::last_error() saying what broke;
//   MXL_SYNC()          __syncthreads(): the fiber yields to the block's
//                       scheduler, which releases the barrier once every
//                       thread of the block has arrived at the same call site;
//   MXL_SHARED          a block-wide static: blocks never run concurrently,
//                       and sanitizers see out-of-bounds shared accesses;
//   MXL_THREAD_X ...    the coordinates of the running fiber.
// A barrier that some threads skip (one returned early, or threads wait at
// different call sites) stops the launch with an error instead of hanging.
// The order in which a block's threads run between barriers is selectable
// (forward, reverse, seeded shuffle): a missing barrier shows up as results
// that differ between orders.
//
// Not emulated (yet): warp shuffles and votes, atomics other than
// common.cuh's mxl_atomic_or (fibers are cooperative, so there a plain
// read-modify-write is atomic), dynamic shared memory, y/z thread
// coordinates in kernels, streams (the stream argument is ignored; launches
// complete before MXL_LAUNCH returns).
//
// Cost: glibc swapcontext makes a system call per switch, a few µs per
// emulated thread: fine for unit shapes, not for whole models. Fiber stacks
// are allocated once and reused by later launches. Stack switches are
// announced to AddressSanitizer, so it runs under ASan.
#ifndef MXL_KERNELS_CUDA_EMULATOR_H
#define MXL_KERNELS_CUDA_EMULATOR_H

#ifdef __CUDACC__
#error "kernels/cuda/emulator.h is for host C++ compilers, not nvcc"
#endif

#define MXL_CUDA_EMULATE 1

#include <ucontext.h>

// Under AddressSanitizer every stack switch is announced, so that ASan
// tracks the fiber stacks (and reports shared/local out-of-bounds accesses
// at the kernel's own line) instead of reporting false positives.
#if defined(__SANITIZE_ADDRESS__)
#define MXL_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MXL_EMU_ASAN 1
#endif
#endif
#ifdef MXL_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace mxl_emu {

struct dim {
  unsigned x, y, z;
  dim(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum class order { forward, reverse, shuffle };

struct config {
  order run_order = order::forward;
  uint64_t seed = 1;               // for order::shuffle
  size_t stack_bytes = 64 * 1024;  // per emulated thread
};

inline config &settings() {
  static config c;
  return c;
}

inline std::string &last_error() {
  static std::string e;
  return e;
}

enum class state { runnable, at_barrier, done };

struct fiber {
  ucontext_t ctx;
  char *stack = nullptr;
  size_t stack_size = 0;
  void *asan_fake_stack = nullptr;
  unsigned tx = 0;
  state st = state::runnable;
  const char *sync_file = nullptr;
  int sync_line = 0;
};

// The block being run and the fiber inside it.
struct block_run {
  dim block_idx, block_dim, grid_dim;
  std::vector<fiber> fibers;
  ucontext_t scheduler;
  const void *scheduler_stack = nullptr;  // for ASan: the OS thread's stack
  size_t scheduler_stack_size = 0;
  void *asan_fake_stack = nullptr;
  fiber *current = nullptr;
  void (*body)(void *) = nullptr;
  void *body_arg = nullptr;
};

inline block_run *&current_run() {
  static thread_local block_run *r = nullptr;
  return r;
}

inline fiber &current_fiber() { return *current_run()->current; }

// Stack-switch announcements; no-ops without ASan. `save` null means the
// stack being left is finished.
inline void asan_leave(void **save, const void *to_stack, size_t to_size) {
#ifdef MXL_EMU_ASAN
  __sanitizer_start_switch_fiber(save, to_stack, to_size);
#else
  (void)save, (void)to_stack, (void)to_size;
#endif
}

inline void asan_arrived(void *saved, const void **from_stack, size_t *from_size) {
#ifdef MXL_EMU_ASAN
  __sanitizer_finish_switch_fiber(saved, from_stack, from_size);
#else
  (void)saved, (void)from_stack, (void)from_size;
#endif
}

// The context switches live in functions of their own: swapcontext returns
// twice, and the callers' locals must not be live across it.
__attribute__((noinline)) inline void switch_to_fiber(block_run *r, fiber *f) {
  asan_leave(&r->asan_fake_stack, f->stack, f->stack_size);
  swapcontext(&r->scheduler, &f->ctx);
  asan_arrived(r->asan_fake_stack, nullptr, nullptr);
}

__attribute__((noinline)) inline void switch_to_scheduler(block_run *r, fiber *f) {
  asan_leave(&f->asan_fake_stack, r->scheduler_stack, r->scheduler_stack_size);
  swapcontext(&f->ctx, &r->scheduler);
  asan_arrived(f->asan_fake_stack, nullptr, nullptr);
}

inline void fiber_main();

// getcontext, too, returns twice.
__attribute__((noinline)) inline void init_fiber(block_run *r, fiber *f, unsigned tx,
                                                 std::vector<char> *stack) {
  f->tx = tx;
  f->st = state::runnable;
  f->stack = stack->data();
  f->stack_size = stack->size();
  getcontext(&f->ctx);
  f->ctx.uc_stack.ss_sp = f->stack;
  f->ctx.uc_stack.ss_size = f->stack_size;
  f->ctx.uc_link = &r->scheduler;
  makecontext(&f->ctx, fiber_main, 0);
}

// The fiber's whole life: the kernel body; returning resumes the scheduler
// through uc_link.
inline void fiber_main() {
  block_run *r = current_run();
  asan_arrived(nullptr, &r->scheduler_stack, &r->scheduler_stack_size);
  r->body(r->body_arg);
  r->current->st = state::done;
  asan_leave(nullptr, r->scheduler_stack, r->scheduler_stack_size);
}

inline void syncthreads(const char *file, int line) {
  block_run *r = current_run();
  fiber *f = r->current;
  f->st = state::at_barrier;
  f->sync_file = file;
  f->sync_line = line;
  switch_to_scheduler(r, f);
  f->st = state::runnable;
}

inline std::string site(const fiber &f) {
  return std::string(f.sync_file) + ":" + std::to_string(f.sync_line);
}

// Runs one block to completion; returns false with last_error() set when the
// block's barriers are divergent.
inline bool run_block(block_run &r, std::vector<std::vector<char>> &stacks) {
  size_t n = r.fibers.size();
  for (size_t t = 0; t < n; t++) init_fiber(&r, &r.fibers[t], (unsigned)t, &stacks[t]);
  std::vector<size_t> sequence(n);
  for (size_t t = 0; t < n; t++) sequence[t] = t;
  if (settings().run_order == order::reverse) std::reverse(sequence.begin(), sequence.end());
  std::mt19937_64 rng(settings().seed ^ (r.block_idx.x * 0x9E3779B97F4A7C15ull));
  for (;;) {  // one round: every live thread runs to its next barrier or its end
    if (settings().run_order == order::shuffle) std::shuffle(sequence.begin(), sequence.end(), rng);
    for (size_t t : sequence) {
      fiber &f = r.fibers[t];
      if (f.st == state::done) continue;
      r.current = &f;
      switch_to_fiber(&r, &f);
    }
    const fiber *waiting = nullptr, *finished = nullptr;
    for (const fiber &f : r.fibers) {
      if (f.st == state::done) finished = &f;
      if (f.st != state::at_barrier) continue;
      if (waiting && site(*waiting) != site(f)) {
        last_error() = "block " + std::to_string(r.block_idx.x) + ": threads " +
                       std::to_string(waiting->tx) + " and " + std::to_string(f.tx) +
                       " wait at different barriers (" + site(*waiting) + " vs " + site(f) +
                       ")";
        return false;
      }
      waiting = &f;
    }
    if (!waiting) return true;  // every thread finished
    if (finished) {
      last_error() = "block " + std::to_string(r.block_idx.x) + ": thread " +
                     std::to_string(finished->tx) + " exited while thread " +
                     std::to_string(waiting->tx) + " waits at the barrier at " +
                     site(*waiting);
      return false;
    }
  }
}

// Fiber stacks, kept from launch to launch (allocating and clearing 64 KiB
// per thread at every launch would cost more than most test kernels). A
// launch from inside a kernel (never done) would need a second pool.
inline std::vector<std::vector<char>> &stack_pool(size_t threads) {
  static thread_local std::vector<std::vector<char>> pool;
  if (pool.size() < threads) pool.resize(threads);
  for (size_t t = 0; t < threads; t++)
    if (pool[t].size() != settings().stack_bytes) pool[t].resize(settings().stack_bytes);
  return pool;
}

template <class Body>
int launch(dim grid, dim block, size_t smem, Body &&body) {
  last_error().clear();
  if (smem != 0) {
    last_error() = "dynamic shared memory is not emulated";
    return -1;
  }
  if (block.y != 1 || block.z != 1 || grid.y != 1 || grid.z != 1 || block.x == 0 ||
      block.x > 1024) {
    last_error() = "only 1-D launches with 1..1024 threads per block are emulated";
    return -1;
  }
  block_run r;
  r.grid_dim = grid;
  r.block_dim = block;
  r.fibers.resize(block.x);
  r.body = [](void *arg) { (*static_cast<Body *>(arg))(); };
  r.body_arg = &body;
  std::vector<std::vector<char>> &stacks = stack_pool(block.x);
  block_run *outer = current_run();
  current_run() = &r;
  int status = 0;
  for (unsigned b = 0; b < grid.x && status == 0; b++) {
    r.block_idx = dim(b);
    if (!run_block(r, stacks)) status = -1;
  }
  current_run() = outer;
  return status;
}

}  // namespace mxl_emu

#define MXL_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ((void)(stream), mxl_emu::launch((grid), (block), (smem), [&]() { kernel(__VA_ARGS__); }))

#define MXL_LAUNCH_ERROR(rc) ((void)(rc), mxl_emu::last_error().c_str())

#define MXL_GLOBAL static
#define MXL_DEVICE inline
#define MXL_SHARED static
#define MXL_SYNC() mxl_emu::syncthreads(__FILE__, __LINE__)
#define MXL_UNROLL
#define MXL_THREAD_X ((int64_t)mxl_emu::current_fiber().tx)
#define MXL_BLOCK_X ((int64_t)mxl_emu::current_run()->block_idx.x)
#define MXL_BLOCK_DIM_X ((int64_t)mxl_emu::current_run()->block_dim.x)
#define MXL_GRID_DIM_X ((int64_t)mxl_emu::current_run()->grid_dim.x)

#endif
