// The CUDA emulator: runs the project's kernel headers (*.cuh) on the CPU,
// one fiber per CUDA thread, so CI tests kernels without a GPU
// (docs/cuda-testing.md). C++17, host only, test code: never linked into
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
// The order in which a block's threads run between barriers is selectable:
// forward and reverse run one warp at a time up to the next barrier (warps
// ascending or descending), seeded shuffle interleaves every thread of the
// block. A missing barrier shows up as results that differ between orders,
// or from the reference: under a warp-at-a-time order the first warp to run
// reads shared memory that the others have not written yet.
//
// Warp-level instructions (kernels/cuda/warp.cuh calls them): mma.sync
// m16n8k16 bf16 -> fp32, ldmatrix x1/x2/x4 (+ .trans) and the xor shuffle
// are warp collectives: each lane deposits its operands and waits until
// every lane of its warp has arrived at the same kind of instruction; the
// last to arrive computes every lane's result. A lane that exits or waits
// at __syncthreads while its warp waits at a collective stops the launch
// (deadlock), and so does a warp whose lanes execute different collectives.
// Fragment layouts follow the PTX ISA (sections cited at each function).
// cp.async copies are deferred: issuing one fills its destination with
// 0xFF bytes (bf16 NaN; the contents are undefined until the wait) and the
// copy happens at the issuing thread's cp.async.wait_group, so a missing
// wait reads the poison and a missing barrier after the wait shows up as a
// difference between thread orders. A thread that exits with copies it
// never waited for stops the launch.
//
// Not emulated (yet): votes, atomics other than common.cuh's mxl_atomic_or
// (fibers are cooperative, so there a plain read-modify-write is atomic),
// dynamic shared memory, y/z thread coordinates in kernels, streams (the
// stream argument is ignored; launches complete before MXL_LAUNCH returns).
//
// Cost: on x86-64 a switch is a stack-pointer swap with the callee-saved
// registers pushed and popped (switch_stack below), tens of nanoseconds;
// elsewhere, or with MXL_EMU_UCONTEXT defined, glibc's swapcontext, which
// makes a system call (the signal mask) per switch: that took 80 % of
// test_cuda_model's 4 minutes (perf: swapcontext and the kernel's
// rt_sigprocmask). Fiber stacks are allocated once and reused by later
// launches. Stack switches are announced to AddressSanitizer, so it runs
// under ASan.
#ifndef MXL_KERNELS_CUDA_EMULATOR_H
#define MXL_KERNELS_CUDA_EMULATOR_H

#ifdef __CUDACC__
#error "kernels/cuda/emulator.h is for host C++ compilers, not nvcc"
#endif

#define MXL_CUDA_EMULATE 1

#if defined(__x86_64__) && !defined(MXL_EMU_UCONTEXT)
#define MXL_EMU_STACK_SWITCH 1
#else
#include <ucontext.h>
#endif

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
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

namespace mxl_emu {

struct dim {
  unsigned x, y, z;
  dim(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// forward, reverse: one warp at a time to the next barrier; shuffle: all the
// block's threads interleaved (run_block, schedule_groups).
enum class order { forward, reverse, shuffle };

struct config {
  order run_order = order::forward;
  uint64_t seed = 1;               // for order::shuffle
  size_t stack_bytes = 64 * 1024;  // per emulated thread
  // Called with true before and false after every launch: a test backend
  // that keeps its "device" memory out of the host's reach opens it to
  // kernels here (tests/cuda/cuda_emu_backend.cpp).
  void (*device_access)(bool open) = nullptr;
};

inline config &settings() {
  static config c;
  return c;
}

inline std::string &last_error() {
  static std::string e;
  return e;
}

enum class state { runnable, at_barrier, at_warp, done };

// One cp.async: `bytes` to dst, of which the first src_bytes come from src
// and the rest are zeros (PTX's src-size operand).
struct async_copy {
  void *dst;
  const void *src;
  unsigned bytes, src_bytes;
};

// A suspended execution: where its stack pointer was left (the callee-saved
// registers and the resume address lie above it), or glibc's context.
struct context {
#ifdef MXL_EMU_STACK_SWITCH
  void *sp = nullptr;
#else
  ucontext_t uc;
#endif
};

struct fiber {
  context ctx;
  char *stack = nullptr;
  size_t stack_size = 0;
  void *asan_fake_stack = nullptr;
  unsigned tx = 0;
  state st = state::runnable;
  const char *sync_file = nullptr;
  int sync_line = 0;
  std::vector<async_copy> uncommitted;           // cp.async since the last commit
  std::deque<std::vector<async_copy>> committed;  // oldest group first
};

// The kinds of warp collective; the lanes of a warp must agree on one.
enum class collective { none, mma_bf16, ldmatrix, shfl_xor };

// What the lanes of one warp deposit for a collective and get back.
struct warp_state {
  collective kind = collective::none;
  int variant = 0;  // ldmatrix: matrices (1, 2, 4) + 8 for .trans; shfl: lane mask
  unsigned arrived = 0;
  uint64_t generation = 0;  // collectives completed
  uint32_t in[32][10];      // mma: a[4], b[2], c[4] (float bits); shfl: value
  const void *addr[32];     // ldmatrix: each lane's row address
  uint32_t out[32][4];
};

// The block being run and the fiber inside it.
struct block_run {
  dim block_idx, block_dim, grid_dim;
  std::vector<fiber> fibers;
  std::vector<warp_state> warps;
  context scheduler;
  const void *scheduler_stack = nullptr;  // for ASan: the OS thread's stack
  size_t scheduler_stack_size = 0;
  void *asan_fake_stack = nullptr;
  fiber *current = nullptr;
  void (*body)(void *) = nullptr;
  void *body_arg = nullptr;
  uint64_t progress = 0;  // arrivals at barriers and collectives, exits
  bool failed = false;    // a fiber found an error (last_error() says which)
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

#ifdef MXL_EMU_STACK_SWITCH
// switch_stack(save, to) suspends the caller, its stack pointer saved in
// *save (rdi), and resumes the execution whose stack pointer is `to` (rsi):
// the System V x86-64 callee-saved registers (rbx, rbp, r12-r15) are
// pushed on the stack being left and popped from the one resumed, and
// `ret` continues where that one called switch_stack (or, for a fresh
// fiber, enters fiber_entry: init_fiber lays out its stack so). Everything
// else is caller-saved, which the compiler assumes of any call. MXCSR and
// the x87 control word are not switched: no emulated kernel changes them.
__attribute__((naked, noinline)) static void switch_stack(void ** /* save */, void * /* to */) {
  __asm__(
      "pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

inline void switch_context(context *save, context *to) { switch_stack(&save->sp, to->sp); }
#else
// swapcontext returns twice: the callers (noinline, below) keep no locals
// live across it.
inline void switch_context(context *save, context *to) { swapcontext(&save->uc, &to->uc); }
#endif

__attribute__((noinline)) inline void switch_to_fiber(block_run *r, fiber *f) {
  asan_leave(&r->asan_fake_stack, f->stack, f->stack_size);
  switch_context(&r->scheduler, &f->ctx);
  asan_arrived(r->asan_fake_stack, nullptr, nullptr);
}

__attribute__((noinline)) inline void switch_to_scheduler(block_run *r, fiber *f) {
  asan_leave(&f->asan_fake_stack, r->scheduler_stack, r->scheduler_stack_size);
  switch_context(&f->ctx, &r->scheduler);
  asan_arrived(f->asan_fake_stack, nullptr, nullptr);
}

inline void fiber_main();

#ifdef MXL_EMU_STACK_SWITCH
// A fiber's first frame: fiber_main, then the scheduler, for good (a done
// fiber is never resumed; init_fiber gives its stack a fresh start).
[[noreturn]] inline void fiber_entry() {
  fiber_main();
  block_run *r = current_run();
  void *abandoned;
  switch_stack(&abandoned, r->scheduler.sp);
  __builtin_unreachable();
}

// The stack's top as switch_stack leaves a suspended one: six zeroed
// callee-saved registers, then fiber_entry as the resume address, placed so
// that fiber_entry starts with the stack aligned as after a call (rsp ≡ 8
// mod 16), and a zero return address above it, where unwinders stop.
inline void *fresh_stack(char *stack, size_t size) {
#ifdef MXL_EMU_ASAN
  // a reused stack keeps the redzones of the frames an earlier fiber left
  __asan_unpoison_memory_region(stack, size);
#endif
  uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
  void **slot = (void **)(top - 16);  // fiber_entry's address (16-aligned)
  slot[1] = nullptr;                   // fiber_entry's own return address
  slot[0] = (void *)&fiber_entry;
  for (int i = 1; i <= 6; i++) slot[-i] = nullptr;
  return slot - 6;
}
#endif

// (getcontext returns twice: noinline, as the switches.)
__attribute__((noinline)) inline void init_fiber(block_run *r, fiber *f, unsigned tx,
                                                 std::vector<char> *stack) {
  f->tx = tx;
  f->st = state::runnable;
  f->uncommitted.clear();
  f->committed.clear();
  f->stack = stack->data();
  f->stack_size = stack->size();
#ifdef MXL_EMU_STACK_SWITCH
  (void)r;
  f->ctx.sp = fresh_stack(f->stack, f->stack_size);
#else
  getcontext(&f->ctx.uc);
  f->ctx.uc.uc_stack.ss_sp = f->stack;
  f->ctx.uc.uc_stack.ss_size = f->stack_size;
  f->ctx.uc.uc_link = &r->scheduler.uc;
  makecontext(&f->ctx.uc, fiber_main, 0);
#endif
}

inline void fail(block_run *r, const std::string &why) {
  if (!r->failed) last_error() = "block " + std::to_string(r->block_idx.x) + ": " + why;
  r->failed = true;
}

// Thrown through the failing thread's own stack (destructors run, nothing
// leaks) to fiber_main, which ends the thread; the launch then fails.
struct thread_abort {};

// Records the error and ends the running thread.
[[noreturn]] inline void fail_here(block_run *r, const std::string &why) {
  fail(r, why);
  throw thread_abort();
}

// The fiber's whole life: the kernel body; then the scheduler resumes
// (fiber_entry, or ucontext's uc_link).
inline void fiber_main() {
  block_run *r = current_run();
  asan_arrived(nullptr, &r->scheduler_stack, &r->scheduler_stack_size);
  try {
    r->body(r->body_arg);
  } catch (const thread_abort &) {
    // fail_here recorded the error: the thread ends here
  }
  fiber *f = r->current;
  if (!f->uncommitted.empty() || !f->committed.empty())
    fail(r, "thread " + std::to_string(f->tx) +
                " exited with cp.async copies it never waited for (cp.async.wait_group)");
  f->st = state::done;
  r->progress++;
  asan_leave(nullptr, r->scheduler_stack, r->scheduler_stack_size);
}

inline void syncthreads(const char *file, int line) {
  block_run *r = current_run();
  fiber *f = r->current;
  f->st = state::at_barrier;
  f->sync_file = file;
  f->sync_line = line;
  r->progress++;
  switch_to_scheduler(r, f);
}

// ---------------------------------------------------------------- warps

inline unsigned lane_id() { return current_fiber().tx % 32; }

inline warp_state &my_warp() {
  block_run *r = current_run();
  return r->warps[r->current->tx / 32];
}

inline unsigned warp_lanes(const block_run *r, unsigned warp) {
  unsigned first = warp * 32, n = r->block_dim.x - first;
  return n < 32 ? n : 32;
}

// The calling lane has deposited its operands in my_warp(); waits until the
// whole warp has, and the last lane to arrive runs fire(w) to fill every
// lane's w.out. Returns false when the launch failed meanwhile (the caller
// returns garbage, which nobody reads: the launch reports the error).
template <class Fire>
bool warp_collective(collective kind, int variant, const char *what, Fire &&fire) {
  block_run *r = current_run();
  fiber *f = r->current;
  unsigned warp = f->tx / 32;
  warp_state &w = r->warps[warp];
  if (warp_lanes(r, warp) != 32) {
    fail_here(r, std::string(what) + " needs a full warp; warp " + std::to_string(warp) +
                     " has " + std::to_string(warp_lanes(r, warp)) + " threads");
    return false;
  }
  if (w.arrived == 0) {
    w.kind = kind;
    w.variant = variant;
  } else if (w.kind != kind || w.variant != variant) {
    fail_here(r, "warp " + std::to_string(warp) +
                     ": lanes execute different warp instructions (" + what +
                     " while others wait at another)");
    return false;
  }
  r->progress++;
  if (++w.arrived == 32) {
    fire(w);
    if (r->failed) fail_here(r, "");
    w.arrived = 0;
    w.kind = collective::none;
    w.generation++;
    return !r->failed;
  }
  uint64_t generation = w.generation;
  f->st = state::at_warp;
  while (w.generation == generation && !r->failed) switch_to_scheduler(r, f);
  f->st = state::runnable;
  return !r->failed;
}

// __shfl_xor_sync(0xffffffff, v, mask): lane l gets lane (l ^ mask)'s v.
inline float shfl_xor(float v, int mask) {
  unsigned l = lane_id();
  std::memcpy(&my_warp().in[l][0], &v, 4);
  if (!warp_collective(collective::shfl_xor, mask, "shfl.sync.bfly",
                       [mask](warp_state &w) {
                         for (unsigned i = 0; i < 32; i++)
                           w.out[i][0] = w.in[i ^ (unsigned)mask][0];
                       }))
    return 0.0f;
  float out;
  std::memcpy(&out, &my_warp().out[l][0], 4);
  return out;
}

inline float bf16_bits_to_float(uint32_t h) {
  uint32_t bits = (h & 0xFFFFu) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c
// (PTX ISA, "Warp-level matrix instructions: mma", section "Matrix
// Fragments for mma.m16n8k16 with floating point type"). With
// groupID = lane >> 2 and tig = lane % 4 (threadID_in_group):
//   A 16x16 (row): a0..a7, two bf16 per register (a0 in the low half),
//       row = groupID for a0, a1, a4, a5 and groupID + 8 for a2, a3, a6, a7;
//       col = tig*2 + (i & 1) for a0..a3 and tig*2 + (i & 1) + 8 for a4..a7;
//   B 16x8 (col): b0..b3, row (k) = tig*2 + (i & 1) (+ 8 for b2, b3),
//       col (n) = groupID;
//   C, D 16x8 fp32: c0..c3, row = groupID (c0, c1) or groupID + 8 (c2, c3),
//       col = tig*2 + (i & 1).
// The products of bf16 values are exact in fp32; the emulator accumulates
// them in k order onto c with fp32 fmas (the hardware's order and internal
// width are not specified; tests compare with thresholds, never bits
// against hardware).
inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                              const float c[4]) {
  unsigned l = lane_id();
  warp_state &mine = my_warp();
  for (int i = 0; i < 4; i++) mine.in[l][i] = a[i];
  for (int i = 0; i < 2; i++) mine.in[l][4 + i] = b[i];
  std::memcpy(&mine.in[l][6], c, 16);
  bool ok = warp_collective(collective::mma_bf16, 0, "mma.sync.m16n8k16", [](warp_state &w) {
    float A[16][16], B[16][8], C[16][8];
    for (unsigned lane = 0; lane < 32; lane++) {
      unsigned g = lane >> 2, t = lane % 4;
      for (unsigned i = 0; i < 8; i++) {  // a_i: register i/2, half i%2
        unsigned row = (i == 0 || i == 1 || i == 4 || i == 5) ? g : g + 8;
        unsigned col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = bf16_bits_to_float(w.in[lane][i / 2] >> (16 * (i % 2)));
      }
      for (unsigned i = 0; i < 4; i++) {  // b_i
        unsigned k = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        B[k][g] = bf16_bits_to_float(w.in[lane][4 + i / 2] >> (16 * (i % 2)));
      }
      for (unsigned i = 0; i < 4; i++) {  // c_i
        unsigned row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
        std::memcpy(&C[row][col], &w.in[lane][6 + i], 4);
      }
    }
    for (unsigned lane = 0; lane < 32; lane++) {
      unsigned g = lane >> 2, t = lane % 4;
      for (unsigned i = 0; i < 4; i++) {
        unsigned row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
        float acc = C[row][col];
        for (unsigned k = 0; k < 16; k++) acc = fmaf(A[row][k], B[k][col], acc);
        std::memcpy(&w.out[lane][i], &acc, 4);
      }
    }
  });
  if (ok)
    std::memcpy(d, mine.out[l], 16);
  else
    std::memset(d, 0, 16);  // (never read: the launch failed)
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 (PTX ISA,
// "Warp-level matrix load instruction: ldmatrix"): `count` 8x8 matrices of
// 16-bit elements; lanes 8q..8q+7 give the addresses of rows 0..7 of
// matrix q (each row 16 contiguous bytes, 16-byte aligned). Register q of
// lane l receives two elements of matrix q: without .trans, row l/4,
// columns 2*(l%4) and 2*(l%4)+1; with .trans, column l/4 of rows 2*(l%4) and
// 2*(l%4)+1. The first element is in the low 16 bits.
inline void ldmatrix(uint32_t *regs, int count, bool trans, const void *row_addr) {
  unsigned l = lane_id();
  warp_state &mine = my_warp();
  mine.addr[l] = row_addr;
  bool ok = warp_collective(
      collective::ldmatrix, count + (trans ? 8 : 0), "ldmatrix",
      [count, trans](warp_state &w) {
        block_run *r = current_run();
        for (int q = 0; q < count; q++)
          for (int row = 0; row < 8; row++)
            if (reinterpret_cast<uintptr_t>(w.addr[8 * q + row]) % 16 != 0)
              fail(r, "ldmatrix: the row address of lane " + std::to_string(8 * q + row) +
                          " is not 16-byte aligned");
        if (r->failed) return;
        for (unsigned lane = 0; lane < 32; lane++)
          for (int q = 0; q < count; q++) {
            uint16_t e[2];
            for (unsigned h = 0; h < 2; h++) {
              unsigned row = trans ? 2 * (lane % 4) + h : lane / 4;
              unsigned col = trans ? lane / 4 : 2 * (lane % 4) + h;
              std::memcpy(&e[h], static_cast<const char *>(w.addr[8 * q + row]) + 2 * col, 2);
            }
            w.out[lane][q] = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
          }
      });
  for (int q = 0; q < count; q++) regs[q] = ok ? mine.out[l][q] : 0;
}

// ---------------------------------------------------------------- cp.async
// (PTX ISA, "Data movement and conversion instructions: cp.async",
// "cp.async.commit_group", "cp.async.wait_group")

inline void cp_async(void *dst, const void *src, unsigned bytes, unsigned src_bytes) {
  block_run *r = current_run();
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    fail_here(r, "cp.async of " + std::to_string(bytes) + " bytes from or to an unaligned address");
  if (src_bytes > bytes) fail_here(r, "cp.async: src-size above cp-size");
  std::memset(dst, 0xFF, bytes);  // undefined until the wait: poison
  r->current->uncommitted.push_back({dst, src, bytes, src_bytes});
}

inline void cp_async_commit() {
  fiber *f = current_run()->current;
  f->committed.push_back(std::move(f->uncommitted));
  f->uncommitted.clear();
}

// Completes all but the `pending` most recent committed groups of this
// thread (only its own copies, as on the hardware).
inline void cp_async_wait(unsigned pending) {
  fiber *f = current_run()->current;
  while (f->committed.size() > pending) {
    for (const async_copy &c : f->committed.front()) {
      if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
      std::memset(static_cast<char *>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
    }
    f->committed.pop_front();
  }
}

inline std::string site(const fiber &f) {
  return std::string(f.sync_file) + ":" + std::to_string(f.sync_line);
}

// Why no lane of a waiting warp can go on: one of its lanes exited or waits
// at a barrier.
inline std::string warp_deadlock(const block_run &r) {
  for (const fiber &f : r.fibers) {
    if (f.st != state::at_warp) continue;
    unsigned warp = f.tx / 32;
    for (unsigned t = warp * 32; t < warp * 32 + 32 && t < r.fibers.size(); t++) {
      const fiber &other = r.fibers[t];
      if (other.st == state::done)
        return "lane " + std::to_string(t % 32) + " of warp " + std::to_string(warp) +
               " exited while its warp waits at a warp instruction";
      if (other.st == state::at_barrier)
        return "lane " + std::to_string(t % 32) + " of warp " + std::to_string(warp) +
               " waits at the barrier at " + site(other) +
               " while its warp waits at a warp instruction";
    }
  }
  return "threads wait at warp instructions that can never complete";
}

// Runs `threads`, pass after pass in the given order (reshuffled before each
// pass when `shuffle` is set), until none of them can go on before the
// block's next barrier; false when they never can (a warp deadlock) or an
// instruction failed (last_error() says which).
inline bool run_to_barrier(block_run &r, std::vector<size_t> &threads, std::mt19937_64 *shuffle) {
  for (;;) {
    if (shuffle) std::shuffle(threads.begin(), threads.end(), *shuffle);
    uint64_t before = r.progress;
    bool active = false;
    for (size_t t : threads) {
      fiber &f = r.fibers[t];
      if (f.st == state::done || f.st == state::at_barrier) continue;
      active = true;
      r.current = &f;
      switch_to_fiber(&r, &f);
      if (r.failed) return false;
    }
    if (!active) return true;
    if (r.progress == before) {
      fail(&r, warp_deadlock(r));
      return false;
    }
  }
}

// The groups of threads run_block runs in turn, each to the next barrier.
// Forward and reverse: one warp at a time (warps and their lanes ascending,
// or both descending), so within a barrier interval a warp sees the shared
// memory writes of the warps that ran before it and none of those after
// it; the two orders put every producer warp both before and after its
// consumer.
// Lanes still interleave within the warp (at its collectives), which is
// how a warp runs on the hardware. Shuffle: every thread of the block in
// one group, so the warps interleave at every collective (they drift into
// lockstep there: a warp's collective fires when its last lane arrives, by
// when every other thread has run up to its own first collective).
inline std::vector<std::vector<size_t>> schedule_groups(size_t threads, order o) {
  std::vector<std::vector<size_t>> groups;
  if (o == order::shuffle) {
    groups.emplace_back(threads);
    for (size_t t = 0; t < threads; t++) groups[0][t] = t;
    return groups;
  }
  for (size_t first = 0; first < threads; first += 32) {
    groups.emplace_back();
    for (size_t t = first; t < threads && t < first + 32; t++) groups.back().push_back(t);
  }
  if (o == order::reverse) {
    std::reverse(groups.begin(), groups.end());
    for (std::vector<size_t> &g : groups) std::reverse(g.begin(), g.end());
  }
  return groups;
}

// Runs one block to completion; returns false with last_error() set when the
// block's barriers are divergent, its warps deadlock or an instruction
// failed.
inline bool run_block(block_run &r, std::vector<std::vector<char>> &stacks) {
  size_t n = r.fibers.size();
  for (size_t t = 0; t < n; t++) init_fiber(&r, &r.fibers[t], (unsigned)t, &stacks[t]);
  r.warps.assign((n + 31) / 32, warp_state());
  r.failed = false;
  std::vector<std::vector<size_t>> groups = schedule_groups(n, settings().run_order);
  std::mt19937_64 rng(settings().seed ^ (r.block_idx.x * 0x9E3779B97F4A7C15ull));
  std::mt19937_64 *shuffle = settings().run_order == order::shuffle ? &rng : nullptr;
  for (;;) {  // one round: every live thread runs to its next barrier or its end
    for (std::vector<size_t> &group : groups)
      if (!run_to_barrier(r, group, shuffle)) return false;
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
    for (fiber &f : r.fibers)  // the barrier releases every thread
      if (f.st == state::at_barrier) f.st = state::runnable;
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
  void (*access)(bool) = settings().device_access;
  if (access) access(true);
  int status = 0;
  for (unsigned b = 0; b < grid.x && status == 0; b++) {
    r.block_idx = dim(b);
    if (!run_block(r, stacks)) status = -1;
  }
  if (access) access(false);
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
